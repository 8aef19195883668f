package probe

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any of them leaves a goroutine behind: probes open
// sockets and start servers, and a leak there would grow with every round in production.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
