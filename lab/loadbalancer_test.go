package lab

import (
	"context"
	"errors"
	"testing"
	"time"
)

// LoadBalancer from inside (issue 18): a Service of type LoadBalancer whose status carries an
// ingress IP (written as a cloud controller would) is probed on that IP from the Pod network, the
// path a Pod takes to its own cluster's load balancer, which kube-proxy serves on the node. With
// the ingress IP's path broken on node-1 while its ClusterIP works, svcprobe says proxy with
// load_balancer_unreachable for it, hostnames (the same Pods through its ClusterIP) stays ok; after
// the fix, ok again.
func TestLoadBalancerIngress(t *testing.T) { loadBalancerIngress(t) }

// loadBalancerIngress runs in the lab's current proxy mode (TestNftablesMode runs it in nftables mode).
func loadBalancerIngress(t *testing.T) {
	cfg, cl := sharedLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	settle(t, ctx, cl)
	f := LoadBalancerFault
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer ccancel()
		if err := f.Undo(cctx, cfg, cl); err != nil {
			t.Errorf("undo %s: %v", f.Name, err)
		}
		if err := DeleteLoadBalancerService(cctx, cl); err != nil {
			t.Errorf("delete default/%s: %v", LoadBalancerService, err)
		}
		waitMetrics(t, "lab healthy after the LoadBalancer Service went", 60*time.Second, fullyHealthy(cctx, cl))
	})
	if err := EnsureLoadBalancerService(ctx, cl); err != nil {
		t.Fatal(err)
	}
	lbKey := "default/" + LoadBalancerService
	lbAddr := LoadBalancerIP + ":80"
	// kube-proxy serves the ingress IP for a client Pod (the lab's own check, not svcprobe's).
	reach := func(want bool) error {
		err := DialPod(ctx, ClientNetns, lbAddr, 2*time.Second)
		switch {
		case want && err != nil:
			return errors.Join(errors.New("a client Pod cannot reach the ingress IP "+lbAddr), err)
		case !want && err == nil:
			return errors.New("a client Pod still reaches the ingress IP " + lbAddr)
		}
		return nil
	}
	lbOK := func(want string) func(snapshot, map[string]string) error {
		return func(_ snapshot, v map[string]string) error {
			return errors.Join(wantVerdict(v, lbKey, want), wantVerdict(v, hostnames, "ok/success"))
		}
	}
	took := waitMetrics(t, lbKey+" ok, its ingress IP probed", 30*time.Second, func(m snapshot, v map[string]string) error {
		return errors.Join(lbOK("ok/success")(m, v), reach(true),
			agentStages(ctx, cl, "central", "default", LoadBalancerService, map[string]string{"loadbalancer": "ok/success", "proxy": "ok/success"}))
	})
	t.Logf("%s ok with its loadbalancer stage after %s", lbKey, took.Round(10*time.Millisecond))
	// Steady for three intervals: past --probe.settle (3 s) after the Service last changed (its
	// status written), so the fault meets a settled Service, whose failures are not held back.
	for end := time.Now().Add(3 * e2eInterval); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		waitMetrics(t, lbKey+" steady before the fault", 5*time.Second, lbOK("ok/success"))
	}

	if err := f.Inject(ctx, cfg, cl); err != nil {
		t.Fatalf("inject %s: %v", f.Name, err)
	}
	within := 3*e2eInterval + 2*time.Second
	// The verdict is polled alone (a dial of the lab's own may take its whole timeout, which would
	// blur the time the verdict took); the client Pod's view is checked once it shows.
	took = waitMetrics(t, f.Name+": "+f.Expect, within, lbOK("proxy/load_balancer_unreachable"))
	t.Logf("%s: seen after %s (limit %s)", f.Name, took.Round(10*time.Millisecond), within)
	dialStart := time.Now()
	if err := reach(false); err != nil {
		t.Fatalf("%s: %v", f.Name, err)
	}
	t.Logf("%s: a client Pod's connection to the ingress IP fails too (%s)", f.Name, time.Since(dialStart).Round(time.Millisecond))
	// Held: two more intervals of the same verdict, hostnames ok throughout.
	for end := time.Now().Add(2 * e2eInterval); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		waitMetrics(t, f.Name+" steady", 5*time.Second, lbOK("proxy/load_balancer_unreachable"))
	}
	if err := agentStages(ctx, cl, "central", "default", LoadBalancerService, map[string]string{"proxy": "ok/success"}); err != nil {
		t.Fatalf("the ClusterIP during %s: %v", f.Name, err)
	}
	if err := f.Undo(ctx, cfg, cl); err != nil {
		t.Fatalf("undo %s: %v", f.Name, err)
	}
	took = waitMetrics(t, "recovery from "+f.Name, within, lbOK("ok/success"))
	if err := reach(true); err != nil {
		t.Fatalf("after the undo: %v", err)
	}
	t.Logf("%s: recovered after %s", f.Name, took.Round(10*time.Millisecond))
}
