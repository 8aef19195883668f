package lab

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// requireLab skips the test when the lab cannot run here, except under CI
// (CI=true) where a missing prerequisite is a failure.
func requireLab(t *testing.T, cfg *Config) {
	t.Helper()
	missing := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("lab prerequisite missing under CI: "+format, args...)
		}
		t.Skipf("lab prerequisite missing: "+format, args...)
	}
	if runtime.GOOS != "linux" {
		missing("needs Linux")
	}
	if os.Geteuid() != 0 {
		missing("needs root")
	}
	if m := cfg.MissingBinaries(); len(m) > 0 {
		missing("binaries %s (run `make lab-tools`)", strings.Join(m, ", "))
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing("%s (run `make lab-deps`)", tool)
		}
	}
}

func TestLabHostnames(t *testing.T) {
	cfg := DefaultConfig()
	requireE2E(t, &cfg)
	// This test brings its own lab up and down: the shared one goes.
	shared.mu.Lock()
	defer shared.mu.Unlock()

	exe := filepath.Join(t.TempDir(), "svcprobe-lab")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(goBin, "build", "-o", exe, "./cmd/svcprobe-lab").CombinedOutput(); err != nil {
		t.Fatalf("building svcprobe-lab: %v\n%s", err, out)
	}
	cfg.Exe = exe
	cfg.Log = func(format string, args ...any) { t.Logf(format, args...) }

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		if err := Down(cfg); err != nil {
			t.Errorf("down: %v", err)
		}
		left, err := listNetns()
		if err != nil {
			t.Errorf("listing netns: %v", err)
		}
		if len(left) > 0 {
			t.Errorf("netns left after down: %v", left)
		}
		if pids := findProcsByExe(cfg.LabExe()); len(pids) > 0 {
			t.Errorf("processes left after down: %v", pids)
		}
	})

	r, err := Up(ctx, cfg)
	if err != nil {
		t.Fatalf("up: %v", err)
	}
	t.Logf("lab up in %s, hostnames VIP %s", r.Elapsed, r.HostnamesIP)

	cl, err := cfg.Client()
	if err != nil {
		t.Fatal(err)
	}
	pods, err := cl.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=hostnames"})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, p := range pods.Items {
		names[p.Name] = true
	}
	if len(names) != 3 {
		t.Fatalf("want 3 hostnames pods, got %v", names)
	}

	// DNS through CoreDNS, from the client namespace.
	for _, q := range []string{"hostnames.default.svc.cluster.local", "hostnames"} {
		out, err := cfg.ClientExec(ctx, "resolve", q)
		if err != nil {
			t.Fatalf("resolve %s: %v", q, err)
		}
		if got := strings.TrimSpace(out); got != r.HostnamesIP {
			t.Errorf("resolve %s = %q, want %s", q, got, r.HostnamesIP)
		}
	}

	// HTTP to the VIP: kube-proxy spreads the requests over the pods.
	seen := map[string]int{}
	for i := 0; i < 20; i++ {
		out, err := cfg.ClientExec(ctx, "http-get", "http://"+r.HostnamesIP+":80/")
		if err != nil {
			t.Fatalf("GET VIP: %v", err)
		}
		name := strings.TrimSpace(out)
		if !names[name] {
			t.Fatalf("GET VIP answered %q, not a hostnames pod %v", name, names)
		}
		seen[name]++
	}
	if len(seen) < 2 {
		t.Errorf("20 requests reached only %v", seen)
	}
	t.Logf("answers: %v", seen)

	out, err := cfg.ClientExec(ctx, "http-get", "http://hostnames.default.svc.cluster.local/")
	if err != nil {
		t.Fatalf("GET by name: %v", err)
	}
	if !names[strings.TrimSpace(out)] {
		t.Fatalf("GET by name answered %q", out)
	}

	if err := Down(cfg); err != nil {
		t.Fatalf("down: %v", err)
	}
	if left, _ := listNetns(); len(left) > 0 {
		t.Fatalf("netns left after down: %v", left)
	}
}

func TestVersionsMatchMakefile(t *testing.T) {
	b, err := os.ReadFile("lab.mk")
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{"K8S_VERSION": KubernetesVersion, "ETCD_VERSION": EtcdVersion, "COREDNS_VERSION": CoreDNSVersion,
		"KNP_VERSION": KubeNetworkPoliciesVersion} {
		m := regexp.MustCompile(`(?m)^` + name + `\s*:=\s*(\S+)`).FindSubmatch(b)
		if m == nil || string(m[1]) != v {
			t.Errorf("lab.mk %s = %q, Go has %s", name, m, v)
		}
	}
}

func TestResolvConf(t *testing.T) {
	want := "nameserver 198.19.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
	if got := ResolvConf("default"); got != want {
		t.Errorf("got %q", got)
	}
	if n := PodNetns("default", "x"); !hasPrefix(n) {
		t.Errorf("PodNetns %q lacks prefix", n)
	}
}

// A Pod's MAC follows from its address (see podMAC): the same address, the same MAC.
func TestPodMAC(t *testing.T) {
	for addr, want := range map[string]string{"198.18.0.10": "0a:58:c6:12:00:0a", "198.18.1.250": "0a:58:c6:12:01:fa"} {
		if got, err := podMAC(addr); err != nil || got != want {
			t.Errorf("podMAC(%s) = %q, %v; want %q", addr, got, err, want)
		}
	}
	if _, err := podMAC("fd00::1"); err == nil {
		t.Error("podMAC(fd00::1): no error, want one (the lab's Pods are IPv4)")
	}
}
