package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Dual-stack (issue 18). The lab is dual-stack; Services of each ipFamilyPolicy (hostnames
// SingleStack IPv4, hostnames-dual RequireDualStack, hostnames-prefer PreferDualStack,
// hostnames-v6 SingleStack IPv6) are probed on each of their families: their ClusterIPs, their
// Pods' addresses and A/AAAA. Each fault of DualStackFaults breaks one family only and svcprobe
// must name the layer and the family on /metrics (svcprobe_service_verdict{family=...}) within a
// few intervals, hold it, leave the other Services ok, and show recovery. TestNftablesMode runs
// it again with kube-proxy in nftables mode (its IPv6 rules in table ip6 kube-proxy), with the
// fault of the proxy's IPv6 rules only (the other two do not touch the proxy).
func TestDualStack(t *testing.T) { dualStack(t) }

// dualStack runs in the lab's current proxy mode, with the named faults of DualStackFaults (all
// when none is named).
func dualStack(t *testing.T, faults ...string) {
	cfg, cl := sharedLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	settle(t, ctx, cl)
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer ccancel()
		for _, f := range DualStackFaults {
			if err := f.Undo(cctx, cfg, cl); err != nil {
				t.Errorf("undo %s: %v", f.Name, err)
			}
		}
		if err := DeleteDualStackServices(cctx, cl); err != nil {
			t.Errorf("delete the dual-stack Services: %v", err)
		}
		waitMetrics(t, "lab healthy after the dual-stack Services went", 90*time.Second, fullyHealthy(cctx, cl))
	})
	if err := EnsureDualStackServices(ctx, cl); err != nil {
		t.Fatal(err)
	}
	// The cluster is what the policies ask for: families and ClusterIPs.
	for name, want := range map[string]string{hostnamesName: "IPv4", DualStackService: "IPv4,IPv6", PreferDualStackService: "IPv4,IPv6", IPv6Service: "IPv6"} {
		s, err := cl.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var fams []string
		for _, f := range s.Spec.IPFamilies {
			fams = append(fams, string(f))
		}
		if got := strings.Join(fams, ","); got != want || len(s.Spec.ClusterIPs) != len(fams) {
			t.Fatalf("default/%s: families %s, ClusterIPs %v; want %s", name, got, s.Spec.ClusterIPs, want)
		}
		// kube-proxy programs the IPv6 ClusterIPs, in its mode's own way.
		for _, ip := range s.Spec.ClusterIPs {
			if !strings.Contains(ip, ":") {
				continue
			}
			if err := waitFor(ctx, 30*time.Second, "kube-proxy's IPv6 rules for default/"+name, func() error {
				return ipv6Programmed(cfg.ProxyMode(), ip)
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	allOKWith := func(extra map[string]string) func(snapshot, map[string]string) error {
		return func(m snapshot, v map[string]string) error {
			var errs []error
			for _, name := range append([]string{hostnamesName}, DualStackServices...) {
				want := "ok/success"
				if w, ok := extra[name]; ok {
					want = w
				}
				errs = append(errs, wantVerdict(v, "default/"+name, want))
			}
			errs = append(errs, wantVerdict(v, "kube-system/kube-dns", "ok/success"))
			return errors.Join(errs...)
		}
	}
	took := waitMetrics(t, "every dual-stack Service ok", 60*time.Second, allOKWith(nil))
	t.Logf("the dual-stack Services ok after %s", took.Round(10*time.Millisecond))
	// svcprobe probes each family: the dual-stack Service's ClusterIPs and Pod addresses of both
	// families, A and AAAA; the IPv6 Service's over IPv6 only.
	waitMetrics(t, "checks of each family", 30*time.Second, func(snapshot, map[string]string) error {
		return errors.Join(
			stageFamilies(ctx, cl, DualStackService, map[string]string{"proxy": "ipv4,ipv6", "pod": "ipv4,ipv6", "dns": "ipv4,ipv6"}),
			stageFamilies(ctx, cl, PreferDualStackService, map[string]string{"proxy": "ipv4,ipv6", "pod": "ipv4,ipv6"}),
			stageFamilies(ctx, cl, IPv6Service, map[string]string{"proxy": "ipv6", "pod": "ipv6", "dns": "ipv6"}),
		)
	})
	// Steady before the faults: past --probe.settle after the Services last changed.
	for end := time.Now().Add(3 * e2eInterval); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		waitMetrics(t, "dual-stack Services steady", 5*time.Second, allOKWith(nil))
	}

	for _, c := range []struct {
		fault string
		want  map[string]string // verdicts "layer/reason/family" ("layer/*" for any reason)
		// slack is added to the detection and recovery limits: the Corefile reload (2 s and its
		// jitter) and CoreDNS's cache (5 s for these names) for aaaa-missing, the rollout for
		// ipv6-backend-v4-only.
		slack time.Duration
	}{
		{"ipv6-proxy-rules-gone", map[string]string{
			DualStackService: "proxy/*", PreferDualStackService: "proxy/*", IPv6Service: "proxy/*",
		}, 0},
		{"aaaa-missing", map[string]string{DualStackService: "dns/no_answer/ipv6"}, 10 * time.Second},
		{"ipv6-backend-v4-only", map[string]string{IPv6Service: "pod/refused/ipv6"}, 15 * time.Second},
	} {
		if len(faults) > 0 && !slices.Contains(faults, c.fault) {
			continue
		}
		f := dualStackFault(t, c.fault)
		if err := f.Inject(ctx, cfg, cl); err != nil {
			t.Fatalf("inject %s: %v", f.Name, err)
		}
		within := 3*e2eInterval + 2*time.Second + c.slack
		check := func(m snapshot, v map[string]string) error {
			if err := allOKWith(c.want)(m, v); err != nil {
				return err
			}
			// Every broken Service's verdict names IPv6, whatever the reason.
			var errs []error
			for name := range c.want {
				if got := v["default/"+name]; !strings.HasSuffix(got, "/ipv6") {
					errs = append(errs, fmt.Errorf("default/%s: verdict %s does not name family ipv6", name, got))
				}
			}
			return errors.Join(errs...)
		}
		took := waitMetrics(t, f.Name+": "+f.Expect, within, check)
		m, err := scrape(ctx)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := m.verdicts()
		t.Logf("%s: seen after %s (limit %s): %s %s, %s %s, %s %s", f.Name, took.Round(10*time.Millisecond), within,
			DualStackService, v["default/"+DualStackService], PreferDualStackService, v["default/"+PreferDualStackService], IPv6Service, v["default/"+IPv6Service])
		// Held: two more intervals of the same verdicts, the IPv4 Services ok throughout.
		for end := time.Now().Add(2 * e2eInterval); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
			waitMetrics(t, f.Name+" held", 5*time.Second, check)
		}
		if err := f.Undo(ctx, cfg, cl); err != nil {
			t.Fatalf("undo %s: %v", f.Name, err)
		}
		took = waitMetrics(t, "recovery from "+f.Name, within, allOKWith(nil))
		t.Logf("%s: recovered after %s", f.Name, took.Round(10*time.Millisecond))
		// The next fault meets Services whose windows hold no failed round (a failed round still
		// in a window would make the next fault's run its second: held degraded, not failed).
		waitMetrics(t, "windows clear after "+f.Name, 60*time.Second, func(m snapshot, v map[string]string) error {
			if err := allOKWith(nil)(m, v); err != nil {
				return err
			}
			for _, name := range append([]string{hostnamesName}, DualStackServices...) {
				for _, s := range m {
					if s.name == "svcprobe_stage_failure_ratio" && s.labels["service"] == name && s.value > 0 {
						return fmt.Errorf("default/%s stage %s still has failures in its window", name, s.labels["stage"])
					}
				}
			}
			return nil
		})
	}
}

// hostnamesName is the lab's own Service, IPv4 only.
const hostnamesName = "hostnames"

func dualStackFault(t *testing.T, name string) Fault {
	t.Helper()
	for _, f := range DualStackFaults {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("no dual-stack fault %s", name)
	return Fault{}
}

// stageFamilies checks, in the central exporter's JSON API, which IP families each stage of
// default/name dialed or asked for (want: "ipv4,ipv6", "ipv6").
func stageFamilies(ctx context.Context, cl kubernetes.Interface, name string, want map[string]string) error {
	doc, err := agentService(ctx, cl, "central", "default", name)
	if err != nil {
		return err
	}
	var errs []error
	for stage, w := range want {
		var fams []string
		for _, st := range doc.Stages {
			if st.Stage != stage {
				continue
			}
			for _, ch := range st.Checks {
				f := ""
				if a, err := netip.ParseAddr(ch.Addr); err == nil {
					f = map[bool]string{true: "ipv4", false: "ipv6"}[a.Unmap().Is4()]
				} else if strings.HasPrefix(ch.Subject, "AAAA ") {
					f = "ipv6"
				} else if strings.HasPrefix(ch.Subject, "A ") {
					f = "ipv4"
				}
				if f != "" && !slices.Contains(fams, f) {
					fams = append(fams, f)
				}
			}
		}
		slices.Sort(fams)
		if got := strings.Join(fams, ","); got != w {
			errs = append(errs, fmt.Errorf("default/%s stage %s: checks of %q, want %q", name, stage, got, w))
		}
	}
	return errors.Join(errs...)
}

// ipv6Programmed checks that node-1's kube-proxy has a rule for an IPv6 ClusterIP: an element of
// map service-ips of table ip6 kube-proxy (nftables mode), a match in ip6tables' nat chain
// KUBE-SERVICES (iptables mode).
func ipv6Programmed(mode, clusterIP string) error {
	if mode == ProxyModeNFTables {
		out, err := run("ip", "netns", "exec", NodeNetns, "nft", "list", "map", "ip6", KubeProxyTable, "service-ips")
		if err != nil {
			return err
		}
		if !strings.Contains(out, clusterIP+" . tcp . 80") {
			return fmt.Errorf("table ip6 %s map service-ips has no %s . tcp . 80:\n%s", KubeProxyTable, clusterIP, out)
		}
		return nil
	}
	out, err := run("ip", "netns", "exec", NodeNetns, "ip6tables", "-w", "5", "-t", "nat", "-S", "KUBE-SERVICES")
	if err != nil {
		return err
	}
	if !strings.Contains(out, clusterIP+"/128") {
		return fmt.Errorf("ip6tables nat KUBE-SERVICES has no rule for %s:\n%s", clusterIP, out)
	}
	return nil
}
