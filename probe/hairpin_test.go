package probe

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/svcprobe/svcprobe/discovery"
)

// hairpinTarget is the hairpin Service "svcprobe/svcprobe-hairpin" with the given ports, its VIP
// standing in as a loopback address.
func hairpinTarget(vip netip.Addr, ports ...discovery.Port) *discovery.Target {
	return &discovery.Target{
		Namespace: "svcprobe", Name: "svcprobe-hairpin", Kind: discovery.KindClusterIP,
		ClusterIPs: []netip.Addr{vip}, Ports: ports,
		Endpoints: []discovery.Endpoint{{Addresses: []netip.Addr{vip}, Ready: true, PodName: "svcprobe-0"}},
	}
}

func hairpinProber(t *testing.T) *HairpinProber {
	return &HairpinProber{Dialer: &Dialer{Budget: looseBudget(t)}, Service: "svcprobe/svcprobe-hairpin", Identity: "svcprobe-0"}
}

func probeHairpin(t *testing.T, p *HairpinProber, tgt *discovery.Target) Result {
	t.Helper()
	r := p.Probe(shortCtx(t, 5*time.Second), tgt)
	if r.Stage != StageHairpin {
		t.Errorf("stage %q, want %q", r.Stage, StageHairpin)
	}
	return r
}

// identityServer serves IdentityHandler(identity) at DefaultIdentityPath on 127.0.0.1.
func identityServer(t *testing.T, identity string) netip.AddrPort {
	mux := http.NewServeMux()
	mux.Handle(DefaultIdentityPath, IdentityHandler(identity))
	return httpServerOn(t, "127.0.0.1", mux)
}

func TestHairpinSuccess(t *testing.T) {
	addr := identityServer(t, "svcprobe-0")
	r := probeHairpin(t, hairpinProber(t), hairpinTarget(addr.Addr(), tcpPort("http", addr.Port())))
	if r.Outcome != OK || r.Reason != ReasonSuccess || r.Total != 1 {
		t.Fatalf("result %v %s %q, want ok", r.Outcome, r.Reason, r.Detail)
	}
	if !strings.Contains(r.Checks[0].Detail, "svcprobe-0") {
		t.Errorf("detail %q does not say who answered", r.Checks[0].Detail)
	}
}

func TestHairpinWrongBackend(t *testing.T) {
	addr := identityServer(t, "svcprobe-1")
	r := probeHairpin(t, hairpinProber(t), hairpinTarget(addr.Addr(), tcpPort("http", addr.Port())))
	if r.Outcome != Failed || r.Reason != ReasonWrongBackend {
		t.Fatalf("result %v %s %q, want failed wrong_backend", r.Outcome, r.Reason, r.Detail)
	}
	if !strings.Contains(r.Detail, `"svcprobe-1"`) {
		t.Errorf("detail %q does not name who answered", r.Detail)
	}
	if !strings.Contains(r.Hint, "select only this Pod") {
		t.Errorf("hint %q, want the Service to select only this Pod", r.Hint)
	}
}

func TestHairpinEmptyIdentity(t *testing.T) {
	addr := httpServerOn(t, "127.0.0.1", http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	r := probeHairpin(t, hairpinProber(t), hairpinTarget(addr.Addr(), tcpPort("http", addr.Port())))
	if r.Outcome != Failed || r.Reason != ReasonError {
		t.Fatalf("result %v %s %q, want failed error", r.Outcome, r.Reason, r.Detail)
	}
}

func TestHairpinUnreachableBlamesHairpinMode(t *testing.T) {
	dead := freeTCPPort(t, "127.0.0.1")
	r := probeHairpin(t, hairpinProber(t), hairpinTarget(dead.Addr(), tcpPort("http", dead.Port())))
	if r.Outcome != Failed || r.Reason != ReasonRefused || !strings.Contains(r.Hint, "hairpin-mode") {
		t.Fatalf("result %v %s hint %q, want failed refused with the kubelet hairpin-mode hint", r.Outcome, r.Reason, r.Hint)
	}
}

// TestHairpinPortChoice: the port named "hairpin" wins, else the first TCP port.
func TestHairpinPortChoice(t *testing.T) {
	addr := identityServer(t, "svcprobe-0")
	dead := freeTCPPort(t, "127.0.0.1")
	udp := discovery.Port{Name: "dns", Port: 53, TargetPort: intstr.FromInt32(53), Protocol: "UDP"}
	for name, ports := range map[string][]discovery.Port{
		"named hairpin":  {tcpPort("web", dead.Port()), tcpPort("hairpin", addr.Port())},
		"first TCP port": {udp, tcpPort("web", addr.Port()), tcpPort("metrics", dead.Port())},
	} {
		if r := probeHairpin(t, hairpinProber(t), hairpinTarget(addr.Addr(), ports...)); r.Outcome != OK {
			t.Errorf("%s: result %v %s %q, want ok", name, r.Outcome, r.Reason, r.Detail)
		}
	}
}

func TestHairpinCustomPath(t *testing.T) {
	var path atomic.Value
	addr := httpServerOn(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path.Store(r.URL.Path)
		IdentityHandler("svcprobe-0").ServeHTTP(w, r)
	}))
	p := hairpinProber(t)
	p.Path = "/whoami"
	if r := probeHairpin(t, p, hairpinTarget(addr.Addr(), tcpPort("http", addr.Port()))); r.Outcome != OK {
		t.Fatalf("result %v %s %q, want ok", r.Outcome, r.Reason, r.Detail)
	}
	if path.Load() != "/whoami" {
		t.Errorf("path %q, want /whoami", path.Load())
	}
}

func TestHairpinSkipsOtherServices(t *testing.T) {
	var hits atomic.Int64
	addr := httpServerOn(t, "127.0.0.1", http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	other := hairpinTarget(addr.Addr(), tcpPort("http", addr.Port()))
	other.Name = "hostnames"
	r := probeHairpin(t, hairpinProber(t), other)
	if r.Outcome != Skipped || r.Detail != "not the hairpin Service" {
		t.Errorf("result %v %q, want skipped: not the hairpin Service", r.Outcome, r.Detail)
	}
	unconfigured := hairpinProber(t)
	unconfigured.Service = ""
	if r := probeHairpin(t, unconfigured, hairpinTarget(addr.Addr(), tcpPort("http", addr.Port()))); r.Outcome != Skipped {
		t.Errorf("no hairpin Service configured: %v, want skipped", r.Outcome)
	}
	headless := hairpinTarget(addr.Addr(), tcpPort("http", addr.Port()))
	headless.ClusterIPs = nil
	if r := probeHairpin(t, hairpinProber(t), headless); r.Outcome != Skipped {
		t.Errorf("headless hairpin Service: %v, want skipped", r.Outcome)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("%d requests for skipped probes", n)
	}
}

func TestIdentityHandler(t *testing.T) {
	h := IdentityHandler("svcprobe-0")

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, DefaultIdentityPath, nil))
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != http.StatusOK || strings.TrimSpace(string(body)) != "svcprobe-0" {
		t.Errorf("GET: %d %q, want 200 svcprobe-0", rec.Code, body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}

	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, DefaultIdentityPath, nil))
	if rec.Code != http.StatusOK || rec.Body.Len() != 0 {
		t.Errorf("HEAD: %d with %d bytes, want 200 and no body", rec.Code, rec.Body.Len())
	}

	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, DefaultIdentityPath, nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", rec.Code)
	}
}
