package probe

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/svcprobe/svcprobe/discovery"
)

// Every test here talks to loopback only (127.0.0.0/8 and ::1): a unit test must never send a
// packet anywhere else.

// tcpServer is a loopback listener that counts connections. It never closes a connection first
// (it reads until the peer closes): the side that closes first gets the TIME_WAIT, and the
// TIME_WAIT test must see the prober's, not the server's.
type tcpServer struct {
	ln       *net.TCPListener
	addr     netip.AddrPort
	accepted atomic.Int64
}

func mustAddrPort(t *testing.T, a net.Addr) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatalf("parsing listener address %s: %v", a, err)
	}
	return ap
}

// newTCPServer listens on ip:port (port 0 picks one) and serves until the test ends.
func newTCPServer(t *testing.T, ip string, port uint16) *tcpServer {
	t.Helper()
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), port)))
	if err != nil {
		t.Fatalf("listening on %s:%d: %v", ip, port, err)
	}
	s := &tcpServer{ln: ln, addr: mustAddrPort(t, ln.Addr())}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				_, _ = io.Copy(io.Discard, c) // until the prober's RST or FIN
				_ = c.Close()
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

// freeTCPPort returns an address on ip where nothing listens: listen, note the port, close.
func freeTCPPort(t *testing.T, ip string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listening on %s: %v", ip, err)
	}
	ap := mustAddrPort(t, ln.Addr())
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return ap
}

// heldBudget returns a Budget of concurrency 1 whose only slot is taken until the test ends.
func heldBudget(t *testing.T) *Budget {
	t.Helper()
	b, err := NewBudget(BudgetConfig{Concurrency: 1, DNSQPS: 1000, NewConnsPerSecond: 1000})
	if err != nil {
		t.Fatal(err)
	}
	release, err := b.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	return b
}

// looseBudget returns a Budget that does not get in the way of a test.
func looseBudget(t *testing.T) *Budget {
	t.Helper()
	b, err := NewBudget(BudgetConfig{Concurrency: 16, DNSQPS: 10000, NewConnsPerSecond: 10000})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func shortCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func wantReason(t *testing.T, c Check, want Reason) {
	t.Helper()
	if c.Reason != want {
		t.Fatalf("check %q: reason %s (%s), want %s", c.Subject, c.Reason, c.Detail, want)
	}
	if c.Detail == "" {
		t.Errorf("check %q: empty detail", c.Subject)
	}
}

func TestDialerTCPSuccess(t *testing.T) {
	s := newTCPServer(t, "127.0.0.1", 0)
	d := &Dialer{Budget: looseBudget(t)}
	c := d.TCP(shortCtx(t, 5*time.Second), s.addr, "subject")
	wantReason(t, c, ReasonSuccess)
	if c.Subject != "subject" || c.Duration <= 0 {
		t.Errorf("check = %+v, want subject kept and a positive duration", c)
	}
	if got := s.accepted.Load(); got != 1 {
		// The kernel completes the handshake before Accept; give the accept loop a moment.
		time.Sleep(50 * time.Millisecond)
		if got = s.accepted.Load(); got != 1 {
			t.Errorf("listener accepted %d connections, want 1", got)
		}
	}
}

func TestDialerTCPRefused(t *testing.T) {
	d := &Dialer{Budget: looseBudget(t)}
	wantReason(t, d.TCP(shortCtx(t, 5*time.Second), freeTCPPort(t, "127.0.0.1"), "x"), ReasonRefused)
}

func TestDialerTCPTimeout(t *testing.T) {
	t.Run("expired context", func(t *testing.T) {
		s := newTCPServer(t, "127.0.0.1", 0)
		ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel()
		wantReason(t, (&Dialer{}).TCP(ctx, s.addr, "x"), ReasonTimeout)
	})
	t.Run("connect never completes", func(t *testing.T) {
		// A SYN that is never answered cannot be staged on loopback; the hook behaves as the
		// kernel would, blocking until the context's deadline.
		d := &Dialer{dialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			<-ctx.Done()
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: ctx.Err()}
		}}
		c := d.TCP(shortCtx(t, 50*time.Millisecond), netip.MustParseAddrPort("127.0.0.1:9"), "x")
		wantReason(t, c, ReasonTimeout)
		if c.Duration < 40*time.Millisecond {
			t.Errorf("duration %v, want about the 50ms deadline", c.Duration)
		}
	})
}

// TestDialerTCPInjectedErrors covers what loopback cannot produce, and that the Dialer dials
// exactly the address it was given.
func TestDialerTCPInjectedErrors(t *testing.T) {
	target := netip.MustParseAddrPort("127.0.0.7:8080")
	for _, tt := range []struct {
		errno syscall.Errno
		want  Reason
	}{
		{syscall.EADDRNOTAVAIL, ReasonPortExhausted},
		{syscall.Errno(10055), ReasonPortExhausted}, // WSAENOBUFS
		{syscall.EHOSTUNREACH, ReasonUnreachable},
		{syscall.ENETUNREACH, ReasonUnreachable},
		{syscall.ECONNRESET, ReasonReset},
	} {
		t.Run(tt.errno.Error(), func(t *testing.T) {
			var dialed []string
			d := &Dialer{Budget: looseBudget(t), dialContext: func(_ context.Context, network, address string) (net.Conn, error) {
				dialed = append(dialed, network+" "+address)
				return nil, dialErr(tt.errno)
			}}
			wantReason(t, d.TCP(context.Background(), target, "x"), tt.want)
			if len(dialed) != 1 || dialed[0] != "tcp 127.0.0.7:8080" {
				t.Errorf("dialed %q, want exactly [tcp 127.0.0.7:8080]", dialed)
			}
		})
	}
}

func TestDialerTCPBudgetExhausted(t *testing.T) {
	s := newTCPServer(t, "127.0.0.1", 0)
	d := &Dialer{Budget: heldBudget(t)}
	c := d.TCP(shortCtx(t, 50*time.Millisecond), s.addr, "x")
	wantReason(t, c, ReasonBudget)
	time.Sleep(20 * time.Millisecond)
	if n := s.accepted.Load(); n != 0 {
		t.Errorf("listener saw %d connections, want none: the budget must be taken before dialing", n)
	}
}

// TestDialerTCPLeavesNoTimeWait probes a listener many times and then looks for sockets in
// TIME_WAIT on its port: without SO_LINGER 0 every probe would leave one for a minute.
func TestDialerTCPLeavesNoTimeWait(t *testing.T) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Fatalf("no /proc/net/tcp to count TIME_WAIT sockets in: %v", err)
	}
	s := newTCPServer(t, "127.0.0.1", 0)
	d := &Dialer{Budget: looseBudget(t)}
	const n = 50
	for i := range n {
		if c := d.TCP(shortCtx(t, 5*time.Second), s.addr, "x"); !c.OK() {
			t.Fatalf("probe %d: %s %s", i, c.Reason, c.Detail)
		}
	}
	if tw := timeWait(t, s.addr.Port()); len(tw) > 0 {
		t.Fatalf("%d sockets in TIME_WAIT on port %d after %d probes, e.g. %s", len(tw), s.addr.Port(), n, tw[0])
	}
}

// timeWait returns the /proc/net/tcp{,6} lines in TIME_WAIT (state 06) with port at either end.
func timeWait(t *testing.T, port uint16) []string {
	t.Helper()
	var out []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatalf("reading %s: %v", f, err)
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st ...; addresses are HEXIP:HEXPORT.
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != "06" {
				continue
			}
			for _, a := range fields[1:3] {
				_, hexPort, _ := strings.Cut(a, ":")
				if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil && uint16(p) == port {
					out = append(out, sc.Text())
					break
				}
			}
		}
	}
	return out
}

func TestDialerHTTPSuccess(t *testing.T) {
	var gotHost, gotPath, gotUA string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHost, gotPath, gotUA = r.Host, r.URL.RequestURI(), r.UserAgent()
		fmt.Fprint(w, "hello")
	}))
	defer srv.Close()
	d := &Dialer{Budget: looseBudget(t)}
	addr := mustAddrPort(t, srv.Listener.Addr())
	c, body := d.HTTP(shortCtx(t, 5*time.Second), addr, "web.default.svc", discovery.HTTPOptions{Path: "/healthz?full=1", StatusMin: 200, StatusMax: 299}, "x")
	wantReason(t, c, ReasonSuccess)
	if string(body) != "hello" {
		t.Errorf("body %q, want hello", body)
	}
	if gotHost != "web.default.svc" || gotPath != "/healthz?full=1" || gotUA != "svcprobe" {
		t.Errorf("server saw Host %q path %q UA %q", gotHost, gotPath, gotUA)
	}
	if c.Duration <= 0 {
		t.Errorf("duration %v, want positive", c.Duration)
	}
}

func TestDialerHTTPStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "draining", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	d := &Dialer{Budget: looseBudget(t)}
	c, body := d.HTTP(shortCtx(t, 5*time.Second), mustAddrPort(t, srv.Listener.Addr()), "", discovery.HTTPOptions{Path: "/", StatusMin: 200, StatusMax: 399}, "x")
	wantReason(t, c, ReasonHTTPStatus)
	if !strings.Contains(c.Detail, "503") {
		t.Errorf("detail %q does not name the status code", c.Detail)
	}
	if !strings.Contains(string(body), "draining") {
		t.Errorf("body %q, want the error page", body)
	}
}

// TestDialerHTTPDefaultStatusRange: options without a range accept 2xx and 3xx, like the
// annotation's default.
func TestDialerHTTPDefaultStatusRange(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bad" {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	d := &Dialer{Budget: looseBudget(t)}
	addr := mustAddrPort(t, srv.Listener.Addr())
	c, _ := d.HTTP(shortCtx(t, 5*time.Second), addr, "", discovery.HTTPOptions{}, "x")
	wantReason(t, c, ReasonSuccess)
	c, _ = d.HTTP(shortCtx(t, 5*time.Second), addr, "", discovery.HTTPOptions{Path: "/bad"}, "x")
	wantReason(t, c, ReasonHTTPStatus)
}

// TestDialerHTTPDoesNotFollowRedirects: a redirect is judged by its status, and the Dialer
// never connects to the address it points to.
func TestDialerHTTPDoesNotFollowRedirects(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhere.Add(1) }))
	defer other.Close()
	srv := httptest.NewServer(http.RedirectHandler(other.URL+"/", http.StatusFound))
	defer srv.Close()
	d := &Dialer{Budget: looseBudget(t)}
	c, _ := d.HTTP(shortCtx(t, 5*time.Second), mustAddrPort(t, srv.Listener.Addr()), "", discovery.HTTPOptions{Path: "/", StatusMin: 200, StatusMax: 299}, "x")
	wantReason(t, c, ReasonHTTPStatus)
	if !strings.Contains(c.Detail, "302") {
		t.Errorf("detail %q, want the 302", c.Detail)
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests, want none", n)
	}
}

func TestDialerHTTPBodyIsLimited(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(make([]byte, 4*maxHTTPBody)) // fails once the prober hangs up
	}))
	defer srv.Close()
	d := &Dialer{Budget: looseBudget(t)}
	c, body := d.HTTP(shortCtx(t, 5*time.Second), mustAddrPort(t, srv.Listener.Addr()), "", discovery.HTTPOptions{}, "x")
	wantReason(t, c, ReasonSuccess)
	if len(body) != maxHTTPBody {
		t.Errorf("read %d bytes of body, want the %d limit", len(body), maxHTTPBody)
	}
}

// rawServer accepts TCP connections on loopback and hands each to handle.
func rawServer(t *testing.T, handle func(*net.TCPConn)) netip.AddrPort {
	t.Helper()
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			wg.Go(func() { handle(c) })
		}
	})
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return mustAddrPort(t, ln.Addr())
}

func TestDialerHTTPTimeout(t *testing.T) {
	stop := make(chan struct{})
	addr := rawServer(t, func(c *net.TCPConn) {
		defer c.Close()
		<-stop // accept, never answer
	})
	defer close(stop) // runs before rawServer's cleanup waits for the handlers
	d := &Dialer{Budget: looseBudget(t)}
	start := time.Now()
	c, body := d.HTTP(shortCtx(t, 200*time.Millisecond), addr, "", discovery.HTTPOptions{}, "x")
	wantReason(t, c, ReasonTimeout)
	if body != nil {
		t.Errorf("body %q, want none", body)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("probe took %v, want about the 200ms deadline", took)
	}
}

func TestDialerHTTPReset(t *testing.T) {
	addr := rawServer(t, func(c *net.TCPConn) {
		// Read the request, then abort: SO_LINGER 0 makes Close send RST.
		_, _ = http.ReadRequest(bufio.NewReader(c))
		_ = c.SetLinger(0)
		_ = c.Close()
	})
	d := &Dialer{Budget: looseBudget(t)}
	c, _ := d.HTTP(shortCtx(t, 5*time.Second), addr, "", discovery.HTTPOptions{}, "x")
	wantReason(t, c, ReasonReset)
}

func TestDialerHTTPRefused(t *testing.T) {
	d := &Dialer{Budget: looseBudget(t)}
	c, _ := d.HTTP(shortCtx(t, 5*time.Second), freeTCPPort(t, "127.0.0.1"), "", discovery.HTTPOptions{}, "x")
	wantReason(t, c, ReasonRefused)
}

// TestDialerHTTPBudgetExhausted: the budget is taken inside the transport's dial, and its error
// must come out as budget_exhausted, not as a timeout of the Service.
func TestDialerHTTPBudgetExhausted(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	d := &Dialer{Budget: heldBudget(t)}
	c, _ := d.HTTP(shortCtx(t, 50*time.Millisecond), mustAddrPort(t, srv.Listener.Addr()), "", discovery.HTTPOptions{}, "x")
	wantReason(t, c, ReasonBudget)
	if n := hits.Load(); n != 0 {
		t.Errorf("server got %d requests, want none", n)
	}
}

// TestDialerHTTPReleasesBudget: each HTTP probe gives its slot back, or a Budget of 1 would
// starve on the second probe.
func TestDialerHTTPReleasesBudget(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	b, err := NewBudget(BudgetConfig{Concurrency: 1, DNSQPS: 1000, NewConnsPerSecond: 1000})
	if err != nil {
		t.Fatal(err)
	}
	d := &Dialer{Budget: b}
	for i := range 5 {
		c, _ := d.HTTP(shortCtx(t, 2*time.Second), mustAddrPort(t, srv.Listener.Addr()), "", discovery.HTTPOptions{}, "x")
		if !c.OK() {
			t.Fatalf("probe %d: %s %s", i, c.Reason, c.Detail)
		}
	}
}

// udpServer answers each datagram on loopback with reply(request); nil means stay silent.
func udpServer(t *testing.T, reply func([]byte) []byte) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := reply(buf[:n]); out != nil {
				_, _ = pc.WriteTo(out, from)
			}
		}
	})
	t.Cleanup(func() { _ = pc.Close(); wg.Wait() })
	return mustAddrPort(t, pc.LocalAddr())
}

// dnsReply answers a query with rcode.
func dnsReply(t *testing.T, rcode int) func([]byte) []byte {
	return func(b []byte) []byte {
		q := new(dns.Msg)
		if err := q.Unpack(b); err != nil {
			t.Errorf("server got a malformed query: %v", err)
			return nil
		}
		m := new(dns.Msg)
		m.SetRcode(q, rcode)
		out, err := m.Pack()
		if err != nil {
			t.Errorf("packing the reply: %v", err)
			return nil
		}
		return out
	}
}

func TestDialerDNSUDP(t *testing.T) {
	d := &Dialer{Budget: looseBudget(t)}
	t.Run("any rcode is a DNS server", func(t *testing.T) {
		for _, rcode := range []int{dns.RcodeSuccess, dns.RcodeNameError, dns.RcodeRefused} {
			c := d.DNSUDP(shortCtx(t, 2*time.Second), udpServer(t, dnsReply(t, rcode)), "x")
			wantReason(t, c, ReasonSuccess)
			if !strings.Contains(c.Detail, dns.RcodeToString[rcode]) {
				t.Errorf("detail %q does not name rcode %s", c.Detail, dns.RcodeToString[rcode])
			}
		}
	})
	t.Run("garbage is not", func(t *testing.T) {
		addr := udpServer(t, func(b []byte) []byte {
			if len(b) < 2 {
				return nil
			}
			return append(b[:2:2], 0xff, 0x00, 0x01) // our ID, then a truncated header
		})
		c := d.DNSUDP(shortCtx(t, 2*time.Second), addr, "x")
		if c.OK() {
			t.Fatalf("a malformed answer passed: %+v", c)
		}
	})
	t.Run("silence times out", func(t *testing.T) {
		c := d.DNSUDP(shortCtx(t, 100*time.Millisecond), udpServer(t, func([]byte) []byte { return nil }), "x")
		wantReason(t, c, ReasonTimeout)
	})
	t.Run("closed port is refused", func(t *testing.T) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := mustAddrPort(t, pc.LocalAddr())
		_ = pc.Close()
		// Loopback turns the ICMP port unreachable into ECONNREFUSED on the connected socket.
		wantReason(t, d.DNSUDP(shortCtx(t, 2*time.Second), addr, "x"), ReasonRefused)
	})
	t.Run("budget", func(t *testing.T) {
		var asked atomic.Int64
		addr := udpServer(t, func(b []byte) []byte { asked.Add(1); return nil })
		c := (&Dialer{Budget: heldBudget(t)}).DNSUDP(shortCtx(t, 50*time.Millisecond), addr, "x")
		wantReason(t, c, ReasonBudget)
		if asked.Load() != 0 {
			t.Errorf("the server was asked despite the budget")
		}
	})
}

// TestDialerHTTPEndsItsDial: net/http keeps dialing after the request gave up (to pool the
// connection), with no deadline; the Dialer must end that dial with the probe, or sockets to
// black-holed Pods would pile up outside the budget.
func TestDialerHTTPEndsItsDial(t *testing.T) {
	dialEnded := make(chan struct{})
	d := &Dialer{Budget: looseBudget(t), dialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		defer close(dialEnded)
		<-ctx.Done() // a SYN that is never answered
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: ctx.Err()}
	}}
	c, _ := d.HTTP(shortCtx(t, 50*time.Millisecond), netip.MustParseAddrPort("127.0.0.1:9"), "", discovery.HTTPOptions{}, "x")
	wantReason(t, c, ReasonTimeout)
	select {
	case <-dialEnded:
	case <-time.After(2 * time.Second):
		t.Fatal("the transport's dial is still running after the probe returned")
	}
}

// TestDialerSocketsCloseWithRSTHoweverClosed: the Dialer's sockets carry SO_LINGER 0 from before
// connect, so even a plain Close (what net does to a dial cancelled as its handshake completes)
// sends an RST and leaves no TIME_WAIT behind.
func TestDialerSocketsCloseWithRSTHoweverClosed(t *testing.T) {
	s := newTCPServer(t, "127.0.0.1", 0)
	d := &Dialer{Budget: looseBudget(t)}
	const n = 20
	for i := range n {
		c, err := d.dial(shortCtx(t, 5*time.Second), "tcp", s.addr.String())
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		if err := c.Close(); err != nil { // no SetLinger here: the Control hook set it
			t.Fatal(err)
		}
	}
	if tw := timeWait(t, s.addr.Port()); len(tw) > 0 {
		t.Fatalf("%d sockets in TIME_WAIT on port %d after %d plainly closed dials, e.g. %s", len(tw), s.addr.Port(), n, tw[0])
	}
}

// TestDialerHTTPLeavesNoTimeWait: an HTTP probe's connection, closed by net/http after the
// response, is an RST too (the socket had SO_LINGER 0 from before connect).
func TestDialerHTTPLeavesNoTimeWait(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") }))
	defer srv.Close()
	d := &Dialer{Budget: looseBudget(t)}
	addr := mustAddrPort(t, srv.Listener.Addr())
	for i := range 20 {
		if c, _ := d.HTTP(shortCtx(t, 5*time.Second), addr, "x", discovery.HTTPOptions{StatusMin: 200, StatusMax: 299}, "x"); !c.OK() {
			t.Fatalf("probe %d: %s %s", i, c.Reason, c.Detail)
		}
	}
	if tw := timeWait(t, addr.Port()); len(tw) > 0 {
		t.Fatalf("%d sockets in TIME_WAIT on port %d after 20 HTTP probes, e.g. %s", len(tw), addr.Port(), tw[0])
	}
}
