package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/svcprobe/svcprobe/discovery"
)

// maxHTTPBody bounds what an HTTP probe reads: enough for an identity or a health page, never a
// download that would hold a probe slot.
const maxHTTPBody = 64 << 10

// dnsProbeName is what DNSUDP asks. It is a name the cluster DNS answers authoritatively, so a
// probe never makes CoreDNS query upstream; any answer (even NXDOMAIN in a cluster with another
// domain) proves that the server speaks DNS.
const dnsProbeName = "kubernetes.default.svc.cluster.local."

// Dialer opens the probe sockets: every one of them through Budget, to exactly the address it is
// given (no proxy, no redirect, no resolver), and closed so that it leaves no TIME_WAIT behind.
//
// The zero value works without a budget (tests); the exporter always sets Budget. A Dialer must
// not be copied after first use.
type Dialer struct {
	Budget *Budget
	// Guard refuses addresses outside the cluster (see AddressGuard); the stages consult it for
	// every address they take from a Service. nil allows everything (tests); the exporter sets it.
	Guard *AddressGuard

	// dialContext replaces net.Dialer.DialContext in tests, to inject errors that loopback cannot
	// produce (unreachable, port exhaustion). nil in production.
	dialContext func(ctx context.Context, network, address string) (net.Conn, error)

	once      sync.Once
	transport *http.Transport
}

// conn acquires a connection slot, with the error marked as a budget error.
func (d *Dialer) conn(ctx context.Context) (func(), error) {
	if d.Budget == nil {
		return func() {}, nil
	}
	release, err := d.Budget.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBudget, err)
	}
	return release, nil
}

// dnsSlot acquires a DNS query slot, with the error marked as a budget error.
func (d *Dialer) dnsSlot(ctx context.Context) (func(), error) {
	if d.Budget == nil {
		return func() {}, nil
	}
	release, err := d.Budget.DNS(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBudget, err)
	}
	return release, nil
}

func (d *Dialer) dial(ctx context.Context, network, address string) (net.Conn, error) {
	if d.dialContext != nil {
		return d.dialContext(ctx, network, address)
	}
	nd := net.Dialer{Control: lingerZero}
	return nd.DialContext(ctx, network, address)
}

// lingerZero is net.Dialer.Control for every probe socket: SO_LINGER 0 is set before connect,
// so that every close is an RST and frees the socket at once instead of keeping it in TIME_WAIT
// for a minute, also the closes inside net when a dial is cancelled just as its
// handshake completes (the kernel has the connection, Go closes it with a plain close). Those
// left client-end TIME_WAIT sockets behind under load (bench: tens at 7.7k connects/s).
func lingerZero(network, _ string, rc syscall.RawConn) error {
	if !strings.HasPrefix(network, "tcp") {
		return nil
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = setLingerZero(fd) }); err != nil {
		return err
	}
	return serr
}

// TCP connects to addr and closes the connection at once. Duration is the connect time.
func (d *Dialer) TCP(ctx context.Context, addr netip.AddrPort, subject string) Check {
	c := Check{Subject: subject}
	release, err := d.conn(ctx)
	if err != nil {
		c.Reason, c.Detail = classify(err)
		return c
	}
	defer release()
	start := time.Now()
	conn, err := d.dial(ctx, "tcp", addr.String())
	c.Duration = time.Since(start)
	if err != nil {
		c.Reason, c.Detail = classify(err)
		return c
	}
	// The connect was the probe. The close is an RST (lingerZero), so thousands of probes a round
	// leave no TIME_WAIT behind to exhaust ephemeral ports (and the conntrack table).
	_ = conn.Close()
	c.Reason, c.Detail = ReasonSuccess, "TCP connect succeeded"
	return c
}

// probeCtxKey carries an HTTP probe's own context to the transport's dial (see httpTransport).
type probeCtxKey struct{}

func (d *Dialer) httpTransport() *http.Transport {
	d.once.Do(func() {
		d.transport = &http.Transport{
			// Proxy stays nil: a probe must reach the address itself, never HTTP_PROXY.
			DisableKeepAlives:      true, // one connection per probe, closed after the response
			DisableCompression:     true, // the body is compared byte for byte (hairpin identity)
			MaxResponseHeaderBytes: maxHTTPBody,
			// No budget here: the transport dials with a context detached from the request's
			// deadline and reports the request's own context error when that expires, so a
			// budget wait in here would surface as a timeout of the Service. HTTP holds the slot.
			DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
				// The transport detaches the dial from the request's cancellation (to pool
				// the connection for a later request) and then leaves it running without a
				// deadline: a dial to a black-holed Pod would outlive the probe and its
				// budget slot by minutes. Tie it back to the probe's context.
				if probe, ok := ctx.Value(probeCtxKey{}).(context.Context); ok {
					var cancel context.CancelFunc
					ctx, cancel = context.WithCancel(ctx)
					defer cancel()
					defer context.AfterFunc(probe, cancel)()
				}
				// However the transport closes it, the close is an RST (lingerZero).
				return d.dial(ctx, network, address)
			},
		}
	})
	return d.transport
}

// HTTP sends GET http://addr<opts.Path> with the Host header host (addr when empty) and checks the
// status against opts (200-399 when opts has no range). Redirects are not followed: a redirect
// is an answer of the backend, judged by its status. It returns the check and the first 64 KiB
// of the body (nil when no response arrived), which the hairpin stage compares to an identity.
// Duration covers the whole exchange.
func (d *Dialer) HTTP(ctx context.Context, addr netip.AddrPort, host string, opts discovery.HTTPOptions, subject string) (Check, []byte) {
	c := Check{Subject: subject}
	// The slot is held for the whole exchange: the connection is closed when the body is.
	release, err := d.conn(ctx)
	if err != nil {
		c.Reason, c.Detail = classify(err)
		return c, nil
	}
	defer release()
	// Cancelled on return, which also ends a dial the transport would otherwise leave running.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ctx = context.WithValue(ctx, probeCtxKey{}, ctx)
	path := opts.Path
	if path == "" {
		path = "/"
	}
	if opts.StatusMin == 0 && opts.StatusMax == 0 {
		opts.StatusMin, opts.StatusMax = 200, 399
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr.String()+path, nil)
	if err != nil {
		c.Reason, c.Detail = ReasonError, fmt.Sprintf("building the request for path %q: %v", path, err)
		return c, nil
	}
	if host != "" {
		req.Host = host
	}
	req.Header.Set("User-Agent", "svcprobe")
	client := &http.Client{
		Transport: d.httpTransport(),
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		c.Duration = time.Since(start)
		c.Reason, c.Detail = classify(err)
		return c, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHTTPBody))
	_ = resp.Body.Close() // closes the connection (keep-alives are off)
	c.Duration = time.Since(start)
	if err != nil {
		c.Reason, c.Detail = classify(err)
		c.Detail = fmt.Sprintf("HTTP %d, then reading the body: %s", resp.StatusCode, c.Detail)
		return c, body
	}
	status := strconv.Itoa(resp.StatusCode)
	if t := http.StatusText(resp.StatusCode); t != "" {
		status += " " + t
	}
	if !opts.Accepts(resp.StatusCode) {
		c.Reason = ReasonHTTPStatus
		c.Detail = fmt.Sprintf("HTTP %s from GET %s (accepted %d-%d)", status, path, opts.StatusMin, opts.StatusMax)
		return c, body
	}
	c.Reason, c.Detail = ReasonSuccess, fmt.Sprintf("HTTP %s from GET %s", status, path)
	return c, body
}

// DNSUDP sends one DNS query over UDP to addr. Any well-formed response, whatever its rcode,
// succeeds: the probe asks whether a DNS server answers on the port, not what it knows (the dns
// stage checks answers).
func (d *Dialer) DNSUDP(ctx context.Context, addr netip.AddrPort, subject string) Check {
	c := Check{Subject: subject}
	release, err := d.dnsSlot(ctx)
	if err != nil {
		c.Reason, c.Detail = classify(err)
		return c
	}
	defer release()
	start := time.Now()
	conn, err := d.dial(ctx, "udp", addr.String())
	if err != nil {
		c.Duration = time.Since(start)
		c.Reason, c.Detail = classify(err)
		return c
	}
	defer conn.Close()
	m := new(dns.Msg)
	m.SetQuestion(dnsProbeName, dns.TypeA)
	// Without a deadline on ctx the client's own 2s timeouts apply, so a probe never hangs.
	client := &dns.Client{Net: "udp"}
	resp, _, err := client.ExchangeWithConnContext(ctx, m, &dns.Conn{Conn: conn})
	c.Duration = time.Since(start)
	if err != nil {
		c.Reason, c.Detail = classify(err)
		var perr *net.OpError
		if c.Reason == ReasonError && !errors.As(err, &perr) {
			c.Detail = "malformed DNS response: " + c.Detail
		}
		return c
	}
	c.Reason = ReasonSuccess
	c.Detail = fmt.Sprintf("DNS server answered %s for A %s", dns.RcodeToString[resp.Rcode], dnsProbeName)
	return c
}
