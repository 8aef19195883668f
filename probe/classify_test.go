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
