package pipeline

import (
	"log/slog"
	"testing"
)

func TestFitConcurrencyTo(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, c := range []struct{ want, limit, open, got int }{
		{64, 1 << 20, 20, 64},    // plenty
		{512, 94, 14, 60},        // 80 free: a quarter (20) kept
		{512, 1024, 24, 512},     // 1000 free: 64 kept
		{64, 54, 14, 24},         // 40 free: 16 kept
		{64, 20, 14, 1},          // hardly anything: one at a time, never zero
		{8, 1 << 20, 1 << 19, 8}, // never raised
	} {
		if got := fitConcurrencyTo(c.want, c.limit, c.open, log); got != c.got {
			t.Errorf("want %d, limit %d, open %d: %d, expected %d", c.want, c.limit, c.open, got, c.got)
		}
	}
}
