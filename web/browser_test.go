package web

import (
	"bytes"
	"context"
	"flag"
	"image/png"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/svcprobe/svcprobe/metrics"
)

// updateScreenshot regenerates docs/status-page.png, the README's picture of the status page:
//
//	go test ./web/ -run TestREADMEScreenshot -update-screenshot
var updateScreenshot = flag.Bool("update-screenshot", false, "write ../docs/status-page.png from the demo fixture")

// browserTimeout bounds each Chromium run.
const browserTimeout = 60 * time.Second

// chromium finds Debian's chromium. Missing in CI is a failure (the acceptance test must run
// there); elsewhere the test is skipped.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found: the browser test needs Debian's chromium package; install with make browser-deps")
	}
	t.Skip("chromium not found (install with make browser-deps)")
	return ""
}

// runChromium runs headless Chromium once against url with extra flags and returns its stdout.
// Every host but loopback resolves to nothing, so the browser cannot leave the machine.
func runChromium(t *testing.T, bin, url string, extra ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	defer cancel()
	args := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-default-apps", "--disable-extensions", "--no-proxy-server",
		"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
		"--hide-scrollbars", "--user-data-dir=" + t.TempDir(),
	}
	args = append(append(args, extra...), url)
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\nstderr:\n%s", strings.Join(extra, " "), err, tail(stderr.String(), 2000))
	}
	return stdout.Bytes()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// artifactDir is $ARTIFACTS when set, else web/testdata/artifacts (gitignored).
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("testdata", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// screenshot renders url at 1400x900 into file and checks it is a PNG of that size.
func screenshot(t *testing.T, bin, url, file string) {
	t.Helper()
	abs, err := filepath.Abs(file)
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(abs)
	runChromium(t, bin, url, "--screenshot="+abs, "--window-size=1400,900")
	f, err := os.Open(abs)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	if err != nil {
		t.Fatalf("screenshot %s is not a PNG: %v", abs, err)
	}
	if cfg.Width != 1400 || cfg.Height != 900 {
		t.Errorf("screenshot is %dx%d, want 1400x900", cfg.Width, cfg.Height)
	}
	t.Logf("screenshot: %s", abs)
}

func TestBrowserStatusPage(t *testing.T) {
	bin := chromium(t)
	srv := httptest.NewServer(fixtureHandler(demoStore(), Options{
		Expected: []metrics.Expected{{Namespace: "default", Name: "must-exist"}},
		Links:    []Link{{Text: "Metrics", Href: "/metrics"}},
	}))
	defer srv.Close()

	dom := string(runChromium(t, bin, srv.URL+"/status", "--dump-dom"))
	m := regexp.MustCompile(`(?s)<tr class="svc broken" data-service="default/hostnames-typo" data-verdict="spec">(.*?)</tr>`).FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("the DOM has no broken row for default/hostnames-typo:\n%s", tail(dom, 4000))
	}
	for _, want := range []string{"spec: selector_matches_no_pods", `class="cell s-failed"`, "no_endpoints"} {
		if !strings.Contains(m[1], want) {
			t.Errorf("broken row lacks %q:\n%s", want, m[1])
		}
	}
	if !regexp.MustCompile(`<tr class="svc healthy" data-service="default/hostnames" data-verdict="ok">`).MatchString(dom) {
		t.Error("the DOM has no healthy row for default/hostnames")
	}
	if !strings.Contains(dom, `data-service="default/must-exist" data-verdict="missing"`) {
		t.Error("the missing Service is not listed")
	}
	screenshot(t, bin, srv.URL+"/status", filepath.Join(artifactDir(t), "status-page.png"))

	dom = string(runChromium(t, bin, srv.URL+"/status/default/hostnames-typo", "--dump-dom"))
	if !strings.Contains(dom, `id="step-spec"`) || !strings.Contains(dom, "Broken at step 5") || !strings.Contains(dom, `label "app" is "hostnames", not "hostname"`) {
		t.Errorf("runbook walk incomplete in the DOM:\n%s", tail(dom, 4000))
	}
	screenshot(t, bin, srv.URL+"/status/default/hostnames-typo", filepath.Join(artifactDir(t), "service-page.png"))
}

// TestREADMEScreenshot writes docs/status-page.png with -update-screenshot.
func TestREADMEScreenshot(t *testing.T) {
	if !*updateScreenshot {
		t.Skip("run with -update-screenshot to regenerate docs/status-page.png")
	}
	bin := chromium(t)
	srv := httptest.NewServer(fixtureHandler(demoStore(), Options{Links: []Link{{Text: "Metrics", Href: "/metrics"}, {Text: "Readiness", Href: "/-/ready"}}}))
	defer srv.Close()
	dir := filepath.Join("..", "docs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	screenshot(t, bin, srv.URL+"/status", filepath.Join(dir, "status-page.png"))
}
