package probe

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
)

// errBudget marks an error that arose while waiting for the probe Budget, not on the wire: such a
// failure says the exporter is overloaded, not that the Service is broken, so it must never be
// reported as a timeout of the Service. Wrap it (fmt.Errorf("%w: %w", errBudget, err)).
var errBudget = errors.New("probe budget exhausted")

// errnoReason maps one errno to a reason. Windows (Winsock) numbers are listed by value as well as
// the Unix constants: errors.Is compares syscall.Errno by value, so they classify the same way
// whatever GOOS the exporter was built for, and tests on Linux can inject them.
type errnoReason struct {
	errno  syscall.Errno
	reason Reason
	detail string
}

// Winsock error numbers (winerror.h); syscall does not export them on non-Windows builds.
// ConnectEx completions also report some failures as Win32 errors (ERROR_CONNECTION_REFUSED and
// friends), so those are listed too. None collides with a Linux errno (all below 200).
const (
	wsaemfile        syscall.Errno = 10024
	wsaeconnaborted  syscall.Errno = 10053
	wsaeaddrinuse    syscall.Errno = 10048
	wsaeaddrnotavail syscall.Errno = 10049
	wsaenetunreach   syscall.Errno = 10051
	wsaeconnreset    syscall.Errno = 10054
	wsaenobufs       syscall.Errno = 10055
	wsaetimedout     syscall.Errno = 10060
	wsaeconnrefused  syscall.Errno = 10061
	wsaehostunreach  syscall.Errno = 10065

	errorConnectionRefused syscall.Errno = 1225
	errorNetworkUnreach    syscall.Errno = 1231
	errorHostUnreach       syscall.Errno = 1232
	errorConnectionAborted syscall.Errno = 1236
)

// errnoReasons returns the errno table. It is a function, not a package variable, so that there is
// no mutable global state; it is small and only walked on failures.
func errnoReasons() []errnoReason {
	const (
		refused   = "connection refused: nothing listens on the port"
		reset     = "connection reset by peer"
		unreach   = "no route to the address"
		exhausted = "no local port or buffer available for a new connection"
		timedOut  = "connection timed out"
	)
	return []errnoReason{
		{syscall.ECONNREFUSED, ReasonRefused, refused},
		{wsaeconnrefused, ReasonRefused, refused},
		{errorConnectionRefused, ReasonRefused, refused},
		{syscall.ECONNRESET, ReasonReset, reset},
		{wsaeconnreset, ReasonReset, reset},
		// Windows aborts a connection locally (WSAECONNABORTED) when the peer or a middlebox
		// dropped it: for a probe the same diagnosis as a reset.
		{wsaeconnaborted, ReasonReset, "connection aborted: " + reset},
		{errorConnectionAborted, ReasonReset, "connection aborted: " + reset},
		{syscall.EPIPE, ReasonReset, "broken pipe: the peer closed the connection"},
		{syscall.EHOSTUNREACH, ReasonUnreachable, "host unreachable: " + unreach},
		{wsaehostunreach, ReasonUnreachable, "host unreachable: " + unreach},
		{errorHostUnreach, ReasonUnreachable, "host unreachable: " + unreach},
		{syscall.ENETUNREACH, ReasonUnreachable, "network unreachable: " + unreach},
		{wsaenetunreach, ReasonUnreachable, "network unreachable: " + unreach},
		{errorNetworkUnreach, ReasonUnreachable, "network unreachable: " + unreach},
		{syscall.EADDRNOTAVAIL, ReasonPortExhausted, "address not available: " + exhausted},
		{wsaeaddrnotavail, ReasonPortExhausted, "address not available: " + exhausted},
		{syscall.EADDRINUSE, ReasonPortExhausted, "address in use: " + exhausted},
		{wsaeaddrinuse, ReasonPortExhausted, "address in use: " + exhausted},
		// WSAENOBUFS is how Windows says it ran out of ephemeral ports (or of the non-paged pool
		// for sockets): the exporter's own doing, never the Service's.
		{wsaenobufs, ReasonPortExhausted, "no buffer space: " + exhausted},
		{wsaemfile, ReasonPortExhausted, "too many open sockets: " + exhausted},
		// Out of file descriptors is the same diagnosis: the exporter, not the Service, ran out of
		// sockets. The probe fails at once, so the round goes on (and stretches) instead of spinning.
		{syscall.EMFILE, ReasonPortExhausted, "too many open files: the exporter's file descriptor limit (ulimit -n) is reached; lower --probe.concurrency or raise the limit"},
		{syscall.ENFILE, ReasonPortExhausted, "file table overflow: the node's file descriptor limit is reached"},
		{syscall.ETIMEDOUT, ReasonTimeout, timedOut},
		{wsaetimedout, ReasonTimeout, timedOut},
	}
}

// maxErrorDetail bounds the detail of unclassified errors: it ends up in logs and on the status
// page, and some errors (HTTP parse errors) quote what the peer sent.
const maxErrorDetail = 200

// classify maps a dial, read or exchange error to a Reason and a short detail for humans.
// A nil error is a success.
func classify(err error) (Reason, string) {
	if err == nil {
		return ReasonSuccess, ""
	}
	// The budget first: a context that expired while waiting for a slot is the exporter's
	// problem, not a timeout of the Service.
	if errors.Is(err, errBudget) {
		return ReasonBudget, "probe budget exhausted before the probe started (the round stretched; raise the budget or the interval)"
	}
	// Errno before timeouts: an errno is the most specific thing the kernel told us.
	for _, e := range errnoReasons() {
		if errors.Is(err, e.errno) {
			return e.reason, e.detail
		}
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return ReasonTimeout, "no answer before the probe deadline"
	case errors.Is(err, context.Canceled):
		return ReasonError, "probe cancelled"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		// The peer closed the connection (FIN) before answering: for a probe that is the
		// same diagnosis as a reset — something accepted the connection and dropped it.
		return ReasonReset, "connection closed by peer before a complete answer"
	}
	return ReasonError, truncate(err.Error(), maxErrorDetail)
}

func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
