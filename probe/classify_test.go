package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// timeoutError is a net.Error that says it timed out, as the net package's deadline errors do.
type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// dialErr wraps an errno the way net.Dialer reports it: *net.OpError{*os.SyscallError{errno}}.
func dialErr(errno syscall.Errno) error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
}

// httpErr wraps err the way http.Client reports it.
func httpErr(err error) error {
	return &url.Error{Op: "Get", URL: "http://127.0.0.1:1/", Err: err}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Reason
	}{
		{"nil", nil, ReasonSuccess},

		{"context deadline", context.DeadlineExceeded, ReasonTimeout},
		{"wrapped context deadline", fmt.Errorf("dialing: %w", context.DeadlineExceeded), ReasonTimeout},
		{"net timeout", &net.OpError{Op: "read", Net: "tcp", Err: timeoutError{}}, ReasonTimeout},
		{"os deadline", httpErr(&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}), ReasonTimeout},
		{"ETIMEDOUT", dialErr(syscall.ETIMEDOUT), ReasonTimeout},
		{"WSAETIMEDOUT", dialErr(syscall.Errno(10060)), ReasonTimeout},

		{"EMFILE at socket()", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}, ReasonPortExhausted},
		{"EMFILE via http", httpErr(dialErr(syscall.EMFILE)), ReasonPortExhausted},
		{"ENFILE", dialErr(syscall.ENFILE), ReasonPortExhausted},

		{"ECONNREFUSED", dialErr(syscall.ECONNREFUSED), ReasonRefused},
		{"ECONNREFUSED via http", httpErr(dialErr(syscall.ECONNREFUSED)), ReasonRefused},
		{"WSAECONNREFUSED", dialErr(syscall.Errno(10061)), ReasonRefused},

		{"ECONNRESET", dialErr(syscall.ECONNRESET), ReasonReset},
		{"EPIPE", &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}, ReasonReset},
		{"WSAECONNRESET", dialErr(syscall.Errno(10054)), ReasonReset},
		{"EOF before answer", httpErr(io.EOF), ReasonReset},
		{"unexpected EOF", fmt.Errorf("reading body: %w", io.ErrUnexpectedEOF), ReasonReset},

		{"EHOSTUNREACH", dialErr(syscall.EHOSTUNREACH), ReasonUnreachable},
		{"ENETUNREACH", dialErr(syscall.ENETUNREACH), ReasonUnreachable},
		{"WSAEHOSTUNREACH", dialErr(syscall.Errno(10065)), ReasonUnreachable},
		{"WSAENETUNREACH", dialErr(syscall.Errno(10051)), ReasonUnreachable},

		{"EADDRNOTAVAIL", dialErr(syscall.EADDRNOTAVAIL), ReasonPortExhausted},
		{"EADDRINUSE", dialErr(syscall.EADDRINUSE), ReasonPortExhausted},
		{"WSAEADDRNOTAVAIL", dialErr(syscall.Errno(10049)), ReasonPortExhausted},
		{"WSAEADDRINUSE", dialErr(syscall.Errno(10048)), ReasonPortExhausted},
		{"WSAENOBUFS", dialErr(syscall.Errno(10055)), ReasonPortExhausted},
		{"WSAENOBUFS bare", syscall.Errno(10055), ReasonPortExhausted},

		// A deadline that hit while waiting for the budget is the exporter's fault, not a timeout.
		{"budget deadline", fmt.Errorf("%w: waiting for a probe slot: %w", errBudget, context.DeadlineExceeded), ReasonBudget},
		{"budget via http", httpErr(&net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("%w: %w", errBudget, context.DeadlineExceeded)}), ReasonBudget},

		{"cancelled", context.Canceled, ReasonError},
		{"other", errors.New("tls: handshake failure"), ReasonError},
		{"unknown errno", dialErr(syscall.Errno(9999)), ReasonError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, detail := classify(tt.err)
			if got != tt.want {
				t.Errorf("classify(%v) = %s (%q), want %s", tt.err, got, detail, tt.want)
			}
			if !slices.Contains(Reasons, got) {
				t.Errorf("classify(%v) = %q, not in the closed set Reasons", tt.err, got)
			}
			if tt.err != nil && detail == "" {
				t.Errorf("classify(%v): empty detail", tt.err)
			}
		})
	}
}

func TestClassifyTruncatesLongErrors(t *testing.T) {
	_, detail := classify(errors.New(strings.Repeat("x", 10*maxErrorDetail)))
	if len(detail) > maxErrorDetail+len("...") {
		t.Fatalf("detail has %d bytes, want at most %d", len(detail), maxErrorDetail+3)
	}
}

// winErr wraps a Winsock or Win32 error number the way the net package reports it on Windows:
// *net.OpError{*os.SyscallError{"connectex"|"wsarecv"|"wsasend", Errno}}. syscall.Errno compares
// by value, so the classification runs (and is tested) on Linux with these injected errors.
func winErr(op, syscallName string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Err: os.NewSyscallError(syscallName, errno)}
}

func TestClassifyWindowsErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Reason
	}{
		{"WSAECONNREFUSED connectex", winErr("dial", "connectex", 10061), ReasonRefused},
		{"WSAECONNREFUSED via http", httpErr(winErr("dial", "connectex", 10061)), ReasonRefused},
		{"ERROR_CONNECTION_REFUSED", winErr("dial", "connectex", 1225), ReasonRefused},
		{"WSAETIMEDOUT connectex", winErr("dial", "connectex", 10060), ReasonTimeout},
		{"WSAETIMEDOUT via http", httpErr(winErr("dial", "connectex", 10060)), ReasonTimeout},
		{"WSAEADDRINUSE bind", winErr("dial", "bind", 10048), ReasonPortExhausted},
		{"WSAEADDRINUSE via http", httpErr(winErr("dial", "connectex", 10048)), ReasonPortExhausted},
		{"WSAENOBUFS socket", winErr("dial", "socket", 10055), ReasonPortExhausted},
		{"WSAENOBUFS via http", httpErr(winErr("dial", "connectex", 10055)), ReasonPortExhausted},
		{"WSAEMFILE", winErr("dial", "socket", 10024), ReasonPortExhausted},
		{"WSAEHOSTUNREACH", winErr("dial", "connectex", 10065), ReasonUnreachable},
		{"ERROR_HOST_UNREACHABLE", winErr("dial", "connectex", 1232), ReasonUnreachable},
		{"WSAENETUNREACH", winErr("dial", "connectex", 10051), ReasonUnreachable},
		{"ERROR_NETWORK_UNREACHABLE", winErr("dial", "connectex", 1231), ReasonUnreachable},
		{"WSAECONNRESET wsarecv", winErr("read", "wsarecv", 10054), ReasonReset},
		{"WSAECONNABORTED wsasend", winErr("write", "wsasend", 10053), ReasonReset},
		{"ERROR_CONNECTION_ABORTED", winErr("read", "wsarecv", 1236), ReasonReset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, detail := classify(tt.err)
			if got != tt.want {
				t.Errorf("classify(%v) = %s (%q), want %s", tt.err, got, detail, tt.want)
			}
			if detail == "" || strings.Contains(detail, "errno") {
				t.Errorf("classify(%v): detail %q, want words", tt.err, detail)
			}
		})
	}
}

// Every errno is listed once: the table is walked in order, so a number listed twice (a Winsock or
// Win32 number equal to a Linux errno, say) would classify by whichever comes first.
func TestErrnoTableHasNoDuplicates(t *testing.T) {
	seen := map[syscall.Errno]Reason{}
	windows := 0
	for _, e := range errnoReasons() {
		if r, dup := seen[e.errno]; dup {
			t.Errorf("errno %d listed twice (%s and %s)", e.errno, r, e.reason)
		}
		seen[e.errno] = e.reason
		if e.errno >= 1000 {
			windows++
		}
	}
	if windows < 12 {
		t.Fatalf("only %d Windows error numbers in the table", windows)
	}
}
