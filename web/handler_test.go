package web

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/svcprobe/svcprobe/discovery"
	"github.com/svcprobe/svcprobe/metrics"
	"github.com/svcprobe/svcprobe/probe"
)

func fixtureHandler(s *metrics.Store, opts Options) http.Handler {
	if opts.Now == nil {
		opts.Now = func() time.Time { return fixtureNow }
	}
	return New(s, opts)
}

func do(t *testing.T, h http.Handler, target string) (int, http.Header, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, rec.Result().Header, string(b)
}

// rows returns the data-service attribute of every matrix row, in page order.
func rows(body string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`<tr class="svc [a-z]+" data-service="([^"]+)"`).FindAllStringSubmatch(body, -1) {
		out = append(out, m[1])
	}
	return out
}

func TestIndexGroupsByNamespaceBrokenFirst(t *testing.T) {
	h := fixtureHandler(demoStore(), Options{})
	for _, path := range []string{"/", "/status", "/status/"} {
		code, hdr, body := do(t, h, path)
		if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") {
			t.Fatalf("GET %s: %d %s", path, code, hdr.Get("Content-Type"))
		}
		got := strings.Join(rows(body), " ")
		// Namespaces with a broken Service first (default, shop), then the healthy ones; inside
		// a namespace broken rows first.
		want := "default/hostnames-typo default/web default/hostnames shop/api shop/cart shop/db kube-system/kube-dns monitoring/prometheus"
		if got != want {
			t.Errorf("GET %s rows:\n got %s\nwant %s", path, got, want)
		}
	}
}

func TestIndexCellsShowStatusAndReason(t *testing.T) {
	_, _, body := do(t, fixtureHandler(demoStore(), Options{}), "/status")
	row := func(key string) string {
		i := strings.Index(body, `data-service="`+key+`"`)
		if i < 0 {
			t.Fatalf("no row %s", key)
		}
		j := strings.Index(body[i:], "</tr>")
		return body[i : i+j]
	}
	typo := row("default/hostnames-typo")
	for _, want := range []string{
		`data-verdict="spec"`, `spec: selector_matches_no_pods`,
		`class="cell s-failed" title="selector app=hostname matches no Pod in namespace default">selector_matches_no_pods<`,
		`class="cell s-skipped"`, `0 / 0 / 0`, `4s ago`,
	} {
		if !strings.Contains(typo, want) {
			t.Errorf("hostnames-typo row lacks %q:\n%s", want, typo)
		}
	}
	if web := row("default/web"); !strings.Contains(web, `class="cell s-degraded"`) || !strings.Contains(web, "refused (1/3)") {
		t.Errorf("web row should show the pod stage degraded, 1 of 3:\n%s", web)
	}
	if cart := row("shop/cart"); !strings.Contains(cart, `proxy: timeout`) || !strings.Contains(cart, "2.00s") {
		t.Errorf("cart row should blame the proxy and show its latency:\n%s", cart)
	}
	if hn := row("default/hostnames"); strings.Contains(hn, "s-failed") || !strings.Contains(hn, `>ok<`) || !strings.Contains(hn, "3 / 0 / 0") {
		t.Errorf("hostnames row should be healthy with 3 ready endpoints:\n%s", hn)
	}
	if !strings.Contains(body, `id="cluster-dns"`) || !strings.Contains(body, "coredns-5d78c9869d-9wz7m") || !strings.Contains(body, "2 of 2 answer") {
		t.Error("cluster DNS summary missing or incomplete")
	}
	if strings.Contains(body, "<script") {
		t.Error("the status page must not need any script")
	}
}

func TestIndexFilters(t *testing.T) {
	h := fixtureHandler(demoStore(), Options{Expected: []metrics.Expected{{Namespace: "default", Name: "must-exist"}, {Namespace: "default", Name: "hostnames"}}})
	for _, tc := range []struct{ query, want string }{
		{"?namespace=shop", "shop/api shop/cart shop/db"},
		{"?broken=1", "default/must-exist default/hostnames-typo default/web shop/api shop/cart"},
		{"?q=typo", "default/hostnames-typo"},
		{"?q=PROXY", "shop/cart"}, // verdict matches, case-insensitively
		{"?q=timeout&namespace=default", ""},
		{"?namespace=default&broken=1", "default/must-exist default/hostnames-typo default/web"},
	} {
		_, _, body := do(t, h, "/status"+tc.query)
		if got := strings.Join(rows(body), " "); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.query, got, tc.want)
		}
	}
	// The form keeps the filter.
	_, _, body := do(t, h, "/status?namespace=shop&q=ca&broken=1")
	for _, want := range []string{`<option value="shop" selected>`, `name="q" value="ca"`, `value="1" checked`} {
		if !strings.Contains(body, want) {
			t.Errorf("filter form lacks %q", want)
		}
	}
}

func bigStore(n int) *metrics.Store {
	s := metrics.NewStore()
	at := fixtureNow.Add(-time.Second)
	for i := range n {
		tg := target(fmt.Sprintf("ns-%03d", i%50), fmt.Sprintf("svc-%05d", i), "10.96.1.1", 2, map[string]string{"app": "x"})
		res := healthyResults(tg, at)
		if i%97 == 0 {
			res[3] = failed(probe.StagePod, at, probe.ReasonTimeout, "timeout", "check the Pods", chk("10.244.0.10:9376", probe.ReasonTimeout, "no answer", 2000))
		}
		s.Record(tg, res)
	}
	return s
}

func TestPaginationKeepsPagesSmall(t *testing.T) {
	const n = 5000
	h := fixtureHandler(bigStore(n), Options{})
	start := time.Now()
	code, _, body := do(t, h, "/status")
	elapsed := time.Since(start)
	if code != http.StatusOK {
		t.Fatal(code)
	}
	r := rows(body)
	if len(r) != DefaultPageSize {
		t.Fatalf("first page has %d rows, want %d", len(r), DefaultPageSize)
	}
	// 5000/97 rounded up = 52 broken Services, all in the first rows.
	if !strings.Contains(body, "5000 shown, 52 broken") || !strings.Contains(body, "page 1 of 25") {
		t.Errorf("summary or page count wrong")
	}
	if !strings.Contains(body, `href="/status?page=2"`) {
		t.Error("no link to page 2")
	}
	if len(body) > 1<<20 {
		t.Errorf("one page is %d bytes; pagination should keep it well under 1 MiB", len(body))
	}
	t.Logf("5000 Services: page 1 rendered in %s, %d KiB", elapsed, len(body)>>10)

	_, _, last := do(t, h, "/status?page=25")
	if got := len(rows(last)); got != n-24*DefaultPageSize {
		t.Errorf("last page has %d rows", got)
	}
	_, _, beyond := do(t, h, "/status?page=99")
	if len(rows(beyond)) != 0 || !strings.Contains(beyond, "No Service matches") {
		t.Error("a page past the end should be empty, not an error")
	}
	var list ServiceList
	_, _, js := do(t, h, "/api/v1/services?page=2&page_size=50")
	if err := json.Unmarshal([]byte(js), &list); err != nil {
		t.Fatal(err)
	}
	if list.Total != n || list.Page != 2 || list.PageSize != 50 || list.Pages != 100 || len(list.Services) != 50 {
		t.Errorf("list paging: total %d page %d size %d pages %d got %d", list.Total, list.Page, list.PageSize, list.Pages, len(list.Services))
	}
}

func BenchmarkStatusPage5000(b *testing.B) {
	h := fixtureHandler(bigStore(5000), Options{})
	req := httptest.NewRequest(http.MethodGet, "/status", nil)
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}

func TestServiceRunbookWalk(t *testing.T) {
	h := fixtureHandler(demoStore(), Options{})
	code, _, body := do(t, h, "/status/default/hostnames-typo")
	if code != http.StatusOK {
		t.Fatal(code)
	}
	// Steps in the runbook's order.
	var ids []string
	for _, m := range regexp.MustCompile(`<li class="step s-([a-z_]+)( blamed)?" id="step-([a-z_]+)"`).FindAllStringSubmatch(body, -1) {
		ids = append(ids, m[3]+"="+m[1]+m[2])
	}
	want := "exists=ok dns=ok cluster_dns=ok proxy=skipped spec=failed blamed endpoints=failed pod=skipped hairpin=skipped nodeport=not_probed loadbalancer=not_probed"
	if got := strings.Join(ids, " "); got != want {
		t.Errorf("runbook steps:\n got %s\nwant %s", got, want)
	}
	for _, want := range []string{
		"Broken at step 5: Is the Service defined correctly?",
		`label &#34;app&#34; is &#34;hostnames&#34;, not &#34;hostname&#34;`, // the hint, escaped
		"selector app=hostname",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("walk lacks %q", want)
		}
	}

	_, _, body = do(t, h, "/status/default/web")
	for _, want := range []string{`id="step-pod"`, "10.244.0.12:9376 (pod web-2)", "connection refused", "Check the failing Pods (web-2)", `s-degraded blamed`} {
		if !strings.Contains(body, want) {
			t.Errorf("web walk lacks %q", want)
		}
	}
	code, _, body = do(t, h, "/status/default/nope")
	if code != http.StatusNotFound || !strings.Contains(body, "Does the Service exist?") {
		t.Errorf("unknown Service: %d", code)
	}
}

func TestAPIFieldNamesAreStable(t *testing.T) {
	h := fixtureHandler(demoStore(), Options{Ready: func() (bool, string) { return false, "discovery not synced" }})
	code, hdr, body := do(t, h, "/api/v1/services")
	if code != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
		t.Fatal(code, hdr)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"generated_at", "ready", "ready_detail", "cluster_dns", "total", "broken", "page", "page_size", "pages", "services"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("list document lacks %q", k)
		}
	}
	if doc["ready"] != false || doc["total"] != 8.0 || doc["broken"] != 4.0 {
		t.Errorf("ready %v total %v broken %v", doc["ready"], doc["total"], doc["broken"])
	}
	dnsDoc := doc["cluster_dns"].(map[string]any)
	for _, k := range []string{"at", "status", "proxy_suspect", "pods_up", "pods_total", "canary", "nameservers", "pods"} {
		if _, ok := dnsDoc[k]; !ok {
			t.Errorf("cluster_dns lacks %q", k)
		}
	}
	svc := doc["services"].([]any)[0].(map[string]any)
	for _, k := range []string{"namespace", "name", "cluster_ips", "verdict", "reason", "healthy", "endpoints", "last_probe", "latency_seconds", "stages"} {
		if _, ok := svc[k]; !ok {
			t.Errorf("service lacks %q", k)
		}
	}
	if _, ok := svc["runbook"]; ok {
		t.Error("the list should not carry the runbook walk")
	}

	code, _, body = do(t, h, "/api/v1/services/default/hostnames-typo")
	if code != http.StatusOK {
		t.Fatal(code)
	}
	var one Service
	if err := json.Unmarshal([]byte(body), &one); err != nil {
		t.Fatal(err)
	}
	if one.Verdict != "spec" || one.Reason != "selector_matches_no_pods" || one.Healthy || len(one.Runbook) != 10 {
		t.Fatalf("got %+v", one)
	}
	spec := one.Runbook[4]
	if spec.ID != "spec" || !spec.Blamed || spec.Status != StatusFailed || !strings.Contains(spec.Hint, "hostnames-7c9d4b8f6-x2k4q") || len(spec.Checks) != 1 || spec.Checks[0].OK {
		t.Errorf("spec step: %+v", spec)
	}
	for _, k := range []string{`"step":`, `"id":`, `"question":`, `"blamed":`, `"checks":`, `"subject":`, `"duration_seconds":`, `"ok":`} {
		if !strings.Contains(body, k) {
			t.Errorf("service document lacks %s", k)
		}
	}

	code, _, body = do(t, h, "/api/v1/services/default/nope")
	if code != http.StatusNotFound || !strings.Contains(body, `"error"`) {
		t.Errorf("unknown Service: %d %s", code, body)
	}
	h = fixtureHandler(demoStore(), Options{Expected: []metrics.Expected{{Namespace: "default", Name: "must-exist"}}})
	code, _, body = do(t, h, "/api/v1/services/default/must-exist")
	if code != http.StatusOK || !strings.Contains(body, `"verdict": "missing"`) {
		t.Errorf("expected but missing Service: %d %s", code, body)
	}
}

func TestEscapesEverythingFromTheCluster(t *testing.T) {
	const evil = `<script>alert("x")</script><img src=x onerror=alert(1)>`
	s := metrics.NewStore()
	tg := target("default", "evil"+evil, "10.96.0.99", 1, map[string]string{"app": evil})
	tg.AnnotationErrors = []error{fmt.Errorf("svcprobe.io/http-path: %s", evil)}
	res := healthyResults(tg, fixtureNow)
	res[0] = failed(probe.StageSpec, fixtureNow, probe.ReasonSelectorMatchesNoPods, "detail "+evil, "hint "+evil,
		chk("selector "+evil, probe.ReasonSelectorMatchesNoPods, "seen "+evil, 0))
	s.Record(tg, res)
	s.RecordClusterDNS(probe.ClusterDNSResult{Canary: chk("canary", probe.ReasonSuccess, evil, 1), Pods: []probe.PodDNSCheck{{Name: evil, Check: chk(evil, probe.ReasonSuccess, "", 1)}}})
	h := fixtureHandler(s, Options{Title: evil, Links: []Link{{Text: evil, Href: "javascript:alert(1)"}}})
	for _, path := range []string{"/status", "/status/default/" + url.PathEscape("evil"+evil)} {
		code, hdr, body := do(t, h, path)
		if code != http.StatusOK && code != http.StatusNotFound {
			t.Fatalf("%s: %d", path, code)
		}
		if strings.Contains(body, "<script") || strings.Contains(body, "<img") || strings.Contains(body, "javascript:") {
			t.Errorf("%s: markup from the cluster reached the page unescaped", path)
		}
		if !strings.Contains(body, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
			t.Errorf("%s: the markup should be shown as text", path)
		}
		if !strings.Contains(hdr.Get("Content-Security-Policy"), "default-src 'none'") {
			t.Errorf("%s: no CSP", path)
		}
	}
	// The detail page of the evil Service, found through the link the matrix renders.
	_, _, body := do(t, h, "/status")
	m := regexp.MustCompile(`<a href="(/status/default/evil[^"]*)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no link to the Service")
	}
	link := strings.NewReplacer("&amp;", "&", "&#43;", "+").Replace(m[1])
	code, _, body := do(t, h, link)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d", link, code)
	}
	for _, want := range []string{"hint &lt;script&gt;", "seen &lt;script&gt;", "svcprobe.io/http-path: &lt;script&gt;"} {
		if !strings.Contains(body, want) {
			t.Errorf("detail page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script") {
		t.Error("detail page: markup unescaped")
	}
	// JSON escapes < and > too, so the document is safe to embed.
	_, _, js := do(t, h, "/api/v1/services")
	if strings.Contains(js, "<script") {
		t.Error("JSON carries raw markup")
	}
}

func TestStatusOf(t *testing.T) {
	for _, tc := range []struct {
		r      probe.Result
		probed bool
		want   Status
	}{
		{probe.Result{}, false, StatusNotProbed},
		{probe.Result{Outcome: probe.Skipped}, true, StatusSkipped},
		{probe.Result{Outcome: probe.OK, Total: 2}, true, StatusOK},
		{probe.Result{Outcome: probe.Failed, Failing: 1, Total: 3}, true, StatusDegraded},
		{probe.Result{Outcome: probe.Failed, Failing: 3, Total: 3}, true, StatusFailed},
		{probe.Result{Outcome: probe.Failed}, true, StatusFailed},
	} {
		if got := StatusOf(tc.r, tc.probed); got != tc.want {
			t.Errorf("%+v: got %s, want %s", tc.r, got, tc.want)
		}
	}
}

func TestDNSBlamedOnProxyMarksClusterDNSStep(t *testing.T) {
	s := metrics.NewStore()
	tg := target("default", "hostnames", "10.96.12.34", 1, map[string]string{"app": "hostnames"})
	res := healthyResults(tg, fixtureNow)
	res[2] = failed(probe.StageDNS, fixtureNow, probe.ReasonTimeout, "A hostnames: timeout", "dns hint",
		chk("A hostnames.default.svc.cluster.local.", probe.ReasonTimeout, "no answer", 2000))
	// Its own VIP not measured this round (a ClusterIP that answered would clear the proxy), and
	// another Service's VIP failing too: the cross-Service evidence the rule needs.
	res[4] = skip(probe.StageProxy, "not measured")
	s.Record(tg, res)
	other := target("default", "other", "10.96.12.35", 1, map[string]string{"app": "other"})
	ores := healthyResults(other, fixtureNow)
	ores[4] = failed(probe.StageProxy, fixtureNow, probe.ReasonTimeout, "10.96.12.35:80: timeout", "proxy hint",
		chk("10.96.12.35:80 (service default/other)", probe.ReasonTimeout, "no answer", 2000))
	s.Record(other, ores)
	s.RecordClusterDNS(probe.ClusterDNSResult{
		Canary:     chk("canary", probe.ReasonTimeout, "no answer", 2000),
		VIP:        []probe.Check{chk("@10.96.0.10:53", probe.ReasonTimeout, "no answer", 2000)},
		Class:      []probe.ResolverClass{probe.ResolverService},
		ServiceIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")},
		Pods:       []probe.PodDNSCheck{{Name: "coredns-a", Check: chk("@10.244.0.2:53", probe.ReasonSuccess, "[10.96.0.1]", 1)}},
	})
	one := getHostnames(t, s)
	if one.Verdict != string(metrics.LayerProxy) {
		t.Fatalf("verdict %s", one.Verdict)
	}
	var blamed []string
	for _, st := range one.Runbook {
		if st.Blamed {
			blamed = append(blamed, st.ID)
		}
	}
	if strings.Join(blamed, ",") != "cluster_dns" || !strings.Contains(one.Runbook[2].Hint, "service proxy") {
		t.Errorf("blamed %v, cluster DNS step %+v", blamed, one.Runbook[2])
	}
	_ = discovery.KindClusterIP
}

func TestMissingServicesJoinTheirNamespaceAndReadinessBanner(t *testing.T) {
	h := fixtureHandler(demoStore(), Options{
		Expected: []metrics.Expected{{Namespace: "shop", Name: "payments"}, {Namespace: "shop", Name: "api"}, {Namespace: "billing", Name: "ledger"}},
		Ready:    func() (bool, string) { return false, "3 Services not probed yet" },
	})
	_, _, body := do(t, h, "/status")
	got := strings.Join(rows(body), " ")
	want := "billing/ledger default/hostnames-typo default/web default/hostnames shop/payments shop/api shop/cart shop/db kube-system/kube-dns monitoring/prometheus"
	if got != want {
		t.Errorf("rows:\n got %s\nwant %s", got, want)
	}
	if n := strings.Count(body, "namespace shop</th>"); n != 1 {
		t.Errorf("namespace shop has %d headers, want 1", n)
	}
	if !strings.Contains(body, "Not ready: 3 Services not probed yet.") {
		t.Error("no readiness banner")
	}
	if !strings.Contains(body, `data-service="shop/payments" data-verdict="missing"`) {
		t.Error("missing Service row lacks its verdict")
	}
}

// A NodePort failing while the ClusterIP answers: the verdict is proxy (nodeport_unreachable) and
// the walk marks the nodeport step, not the cluster DNS step.
func TestRunbookWalkBlamesNodePort(t *testing.T) {
	tg := &discovery.Target{Namespace: "default", Name: "web", Kind: discovery.KindNodePort}
	ss := metrics.ServiceStatus{Target: tg, Verdict: metrics.LayerProxy, Reason: probe.ReasonNodePortUnreachable,
		Results: map[probe.Stage]probe.Result{
			probe.StageProxy:    {Stage: probe.StageProxy, Outcome: probe.OK, Reason: probe.ReasonSuccess},
			probe.StageNodePort: {Stage: probe.StageNodePort, Outcome: probe.Failed, Reason: probe.ReasonTimeout, Failing: 1, Total: 1},
		}}
	var blamed []string
	for _, s := range NewService(ss, nil, true).Runbook {
		if s.Blamed {
			blamed = append(blamed, s.ID)
		}
	}
	if len(blamed) != 1 || blamed[0] != "nodeport" {
		t.Fatalf("blamed steps %v, want [nodeport]", blamed)
	}
}

// A load balancer's ingress IP failing while the ClusterIP answers: the walk marks the
// loadbalancer step.
func TestRunbookWalkBlamesLoadBalancer(t *testing.T) {
	tg := &discovery.Target{Namespace: "default", Name: "shop", Kind: discovery.KindLoadBalancer}
	ss := metrics.ServiceStatus{Target: tg, Verdict: metrics.LayerProxy, Reason: probe.ReasonLoadBalancerUnreachable,
		Results: map[probe.Stage]probe.Result{
			probe.StageProxy:        {Stage: probe.StageProxy, Outcome: probe.OK, Reason: probe.ReasonSuccess},
			probe.StageNodePort:     {Stage: probe.StageNodePort, Outcome: probe.OK, Reason: probe.ReasonSuccess},
			probe.StageLoadBalancer: {Stage: probe.StageLoadBalancer, Outcome: probe.Failed, Reason: probe.ReasonTimeout, Failing: 1, Total: 1},
		}}
	var blamed []string
	for _, s := range NewService(ss, nil, true).Runbook {
		if s.Blamed {
			blamed = append(blamed, s.ID)
		}
	}
	if len(blamed) != 1 || blamed[0] != "loadbalancer" {
		t.Fatalf("blamed steps %v, want [loadbalancer]", blamed)
	}
}

// A VIP failing in a share of rounds: the JSON says the proxy stage's window is degraded with its
// failing share, the verdict is proxy/partial, and the nameserver carries its class.
func TestPartialVIPWindowAndNameserverClass(t *testing.T) {
	s := metrics.NewStore()
	tg := target("default", "hostnames", "10.96.12.34", 3, map[string]string{"app": "hostnames"})
	s.Record(tg, healthyResults(tg, fixtureNow))
	proxyFail := failed(probe.StageProxy, fixtureNow, probe.ReasonTimeout, "10.96.12.34:80: 1 of 3 connections failed", "proxy hint",
		chk("10.96.12.34:80 (service default/hostnames)", probe.ReasonTimeout, "1 of 3 connections failed: timeout", 2000))
	proxyOK := healthyResults(tg, fixtureNow)[4]
	for _, r := range []probe.Result{proxyFail, proxyOK, proxyFail, proxyOK} {
		s.Record(tg, []probe.Result{r})
	}
	s.RecordClusterDNS(probe.ClusterDNSResult{
		Canary: chk("canary", probe.ReasonSuccess, "[10.96.0.1]", 1),
		VIP:    []probe.Check{chk("@169.254.20.10:53", probe.ReasonSuccess, "[10.96.0.1]", 1)},
		Class:  []probe.ResolverClass{probe.ResolverNodeLocal},
	})
	one := getHostnames(t, s)
	if one.Verdict != "proxy" || one.Reason != "partial" {
		t.Fatalf("verdict %s/%s, want proxy/partial", one.Verdict, one.Reason)
	}
	var proxy *Stage
	for i := range one.Stages {
		if one.Stages[i].Stage == "proxy" {
			proxy = &one.Stages[i]
		}
	}
	if proxy == nil || proxy.Window == nil || proxy.Window.State != "degraded" || proxy.Window.FailedRounds != 2 || proxy.Window.Rounds != 5 {
		t.Fatalf("proxy stage %+v, want a degraded window with 2 failed rounds of 5", proxy)
	}
	if !strings.Contains(cellText(*proxy), "partial") {
		t.Errorf("cell %q does not say partial", cellText(*proxy))
	}
	// The walk blames the VIP step, degraded/partial although the last round passed, with a hint.
	var blamed []string
	for _, st := range one.Runbook {
		if st.Blamed {
			blamed = append(blamed, st.ID)
			if st.Status != StatusDegraded || st.Reason != "partial" || !strings.Contains(st.Hint, "stale rule") {
				t.Errorf("blamed step %+v, want degraded, partial, a stale-rule hint", st)
			}
		}
	}
	if strings.Join(blamed, ",") != "proxy" {
		t.Errorf("blamed %v, want [proxy]", blamed)
	}
	code, _, body := do(t, fixtureHandler(s, Options{}), "/api/v1/services")
	if code != http.StatusOK || !strings.Contains(strings.Join(strings.Fields(body), ""), `"class":"node_local"`) {
		t.Errorf("list document: %d, no nameserver class node_local in %s", code, body)
	}
}

// getHostnames reads default/hostnames' JSON document.
func getHostnames(t *testing.T, s *metrics.Store) Service {
	t.Helper()
	code, _, body := do(t, fixtureHandler(s, Options{}), "/api/v1/services/default/hostnames")
	if code != http.StatusOK {
		t.Fatal(code)
	}
	var one Service
	if err := json.Unmarshal([]byte(body), &one); err != nil {
		t.Fatal(err)
	}
	return one
}

// An idle Service (scaled to zero) is neither broken on the status page nor unhealthy in the JSON
// API, and the API names the verdict and the workload the spec stage reported.
func TestIdleIsNotBroken(t *testing.T) {
	s := metrics.NewStore()
	at := fixtureNow.Add(-time.Second)
	tg := target("dev", "idle", "10.96.7.7", 0, map[string]string{"app": "idle"})
	tg.Workloads = []discovery.Workload{{Kind: "Deployment", Name: "idle", Replicas: 0}}
	idle := func(st probe.Stage) probe.Result {
		return probe.Result{Stage: st, Outcome: probe.Skipped, Reason: probe.ReasonScaledToZero, At: at,
			Detail: "scaled to zero on purpose (Deployment/idle (replicas 0))"}
	}
	s.Record(tg, []probe.Result{idle(probe.StageSpec), idle(probe.StageEndpoints)})
	broken := target("dev", "typo", "10.96.7.8", 0, map[string]string{"app": "typ"})
	s.Record(broken, []probe.Result{{Stage: probe.StageSpec, Outcome: probe.Failed, Reason: probe.ReasonSelectorMatchesNoPods, At: at}})
	h := fixtureHandler(s, Options{})
	if _, _, body := do(t, h, "/status?broken=1"); strings.Join(rows(body), " ") != "dev/typo" {
		t.Errorf("broken filter lists %q, want only dev/typo", rows(body))
	}
	code, _, body := do(t, h, "/api/v1/services/dev/idle")
	var doc struct {
		Verdict, Reason string
		Healthy         bool
	}
	if err := json.Unmarshal([]byte(body), &doc); code != http.StatusOK || err != nil {
		t.Fatalf("%d %v: %s", code, err, body)
	}
	if doc.Verdict != "idle" || doc.Reason != "scaled_to_zero" || !doc.Healthy || !strings.Contains(body, "Deployment/idle (replicas 0)") {
		t.Errorf("API says %+v, want idle/scaled_to_zero, healthy, naming the Deployment:\n%s", doc, body)
	}
}

// A stage run lost to the exporter's own limits: the status page and the JSON API keep the last
// conclusive run, healthy, and say the latest one was inconclusive and why.
func TestInconclusiveRunShownNotBlamed(t *testing.T) {
	s := metrics.NewStore()
	at := fixtureNow.Add(-time.Second)
	tg := target("default", "web", "10.96.7.9", 1, map[string]string{"app": "web"})
	s.Record(tg, []probe.Result{
		{Stage: probe.StageSpec, Outcome: probe.OK, Reason: probe.ReasonSuccess, At: at},
		{Stage: probe.StageEndpoints, Outcome: probe.OK, Reason: probe.ReasonSuccess, At: at},
		{Stage: probe.StageProxy, Outcome: probe.OK, Reason: probe.ReasonSuccess, At: at, Total: 1},
	})
	s.Record(tg, []probe.Result{{Stage: probe.StageProxy, Outcome: probe.Failed, Reason: probe.ReasonPortExhausted, At: at,
		Detail: "address not available: the exporter ran out of local ports"}})
	h := fixtureHandler(s, Options{})
	code, _, body := do(t, h, "/api/v1/services/default/web")
	var doc struct {
		Verdict string
		Healthy bool
		Runbook []Step
	}
	if err := json.Unmarshal([]byte(body), &doc); code != http.StatusOK || err != nil {
		t.Fatalf("%d %v: %s", code, err, body)
	}
	var proxy *Step
	for i := range doc.Runbook {
		if doc.Runbook[i].Stage == string(probe.StageProxy) {
			proxy = &doc.Runbook[i]
		}
	}
	if doc.Verdict != "ok" || !doc.Healthy || proxy == nil || proxy.Status != StatusOK ||
		!strings.HasPrefix(proxy.Inconclusive, "port_exhausted: address not available") {
		t.Fatalf("API says verdict %s healthy %v proxy step %+v, want ok, the last conclusive run and port_exhausted inconclusive:\n%s", doc.Verdict, doc.Healthy, proxy, body)
	}
	if _, _, page := do(t, h, "/status/default/web"); !strings.Contains(page, "Last run inconclusive: port_exhausted") {
		t.Errorf("the status page does not say the last run was inconclusive:\n%s", page)
	}
}

// "Since when?": the JSON API and the status page say when the verdict's layer last changed, and
// its last changes.
func TestVerdictSinceShown(t *testing.T) {
	s := metrics.NewStore()
	tg := target("default", "web", "10.96.7.10", 1, map[string]string{"app": "web"})
	round := func(d time.Duration, proxy probe.Outcome) {
		r := []probe.Result{
			{Stage: probe.StageSpec, Outcome: probe.OK, Reason: probe.ReasonSuccess},
			{Stage: probe.StageEndpoints, Outcome: probe.OK, Reason: probe.ReasonSuccess},
			{Stage: probe.StageProxy, Outcome: proxy, Reason: probe.ReasonSuccess, Total: 1},
		}
		if proxy == probe.Failed {
			r[2].Reason, r[2].Failing = probe.ReasonTimeout, 1
		}
		for i := range r {
			r[i].At = fixtureNow.Add(d)
		}
		s.Record(tg, r)
	}
	round(-10*time.Minute, probe.OK)
	round(-5*time.Minute, probe.Failed)
	round(-4*time.Minute, probe.Failed) // proxy since 4m ago
	h := fixtureHandler(s, Options{})
	code, _, body := do(t, h, "/api/v1/services/default/web")
	var doc Service
	if err := json.Unmarshal([]byte(body), &doc); code != http.StatusOK || err != nil {
		t.Fatalf("%d %v: %s", code, err, body)
	}
	if doc.Verdict != "proxy" || doc.VerdictSince == nil || !doc.VerdictSince.Equal(fixtureNow.Add(-4*time.Minute)) ||
		len(doc.VerdictChanges) != 2 || doc.VerdictChanges[0].Verdict != "ok" || doc.VerdictChanges[1].Reason != "timeout" {
		t.Fatalf("verdict %s since %v changes %+v, want proxy since 4m ago after ok:\n%s", doc.Verdict, doc.VerdictSince, doc.VerdictChanges, body)
	}
	if _, _, page := do(t, h, "/status/default/web"); !strings.Contains(page, "verdict since 4m ago") ||
		!strings.Contains(page, "Last verdict changes: ok 10m ago → proxy (timeout) 4m ago") {
		t.Errorf("the status page does not say since when:\n%s", page)
	}
}

// A dual-stack Service whose ClusterIP fails on IPv6 only: the stage and the blamed runbook step
// say so (family ipv6); a stage failing on no particular family carries none.
func TestFamilyShownOnStageAndStep(t *testing.T) {
	tg := &discovery.Target{Namespace: "default", Name: "web", Kind: discovery.KindClusterIP}
	ss := metrics.ServiceStatus{Target: tg, Verdict: metrics.LayerProxy, Reason: probe.ReasonRefused, Family: probe.FamilyIPv6,
		Results: map[probe.Stage]probe.Result{
			probe.StagePod:   {Stage: probe.StagePod, Outcome: probe.OK, Reason: probe.ReasonSuccess},
			probe.StageProxy: {Stage: probe.StageProxy, Outcome: probe.Failed, Reason: probe.ReasonRefused, Family: probe.FamilyIPv6, Failing: 1, Total: 2},
		}}
	svc := NewService(ss, nil, true)
	found := false
	for _, st := range svc.Stages {
		if st.Stage == string(probe.StageProxy) {
			found = true
			if st.Family != "ipv6" {
				t.Errorf("proxy stage family %q, want ipv6", st.Family)
			}
		} else if st.Family != "" {
			t.Errorf("stage %s family %q, want none", st.Stage, st.Family)
		}
	}
	if !found {
		t.Fatal("no proxy stage in the document")
	}
	for _, s := range svc.Runbook {
		if s.Blamed && (s.ID != "proxy" || s.Family != "ipv6") {
			t.Errorf("blamed step %s family %q, want proxy with ipv6", s.ID, s.Family)
		}
	}
	b, err := json.Marshal(svc)
	if err != nil {
		t.Fatal(err)
	}
	if svc.Family != "ipv6" || !strings.Contains(string(b), `"family":"ipv6","healthy"`) {
		t.Errorf("the JSON document does not carry \"family\":\"ipv6\": %s", b)
	}
	// The status page's walk says it too.
	s := metrics.NewStore()
	s.Record(tg, []probe.Result{ss.Results[probe.StagePod], ss.Results[probe.StageProxy]})
	code, _, body := do(t, fixtureHandler(s, Options{}), "/status/default/web")
	if code != http.StatusOK || !strings.Contains(body, "refused, ipv6 only") {
		t.Errorf("status page (%d) does not say \"refused, ipv6 only\":\n%s", code, body)
	}
	// The verdict's own family (the store decides it from the held failure): the badge says it.
	for range 2 {
		s.Record(tg, []probe.Result{ss.Results[probe.StagePod], ss.Results[probe.StageProxy]})
	}
	if _, _, body := do(t, fixtureHandler(s, Options{}), "/status/default/web"); !strings.Contains(body, "broken: proxy (refused, ipv6 only)") {
		t.Errorf("status page's verdict does not say \"broken: proxy (refused, ipv6 only)\":\n%s", body)
	}
	if _, _, body := do(t, fixtureHandler(s, Options{}), "/"); !strings.Contains(body, "proxy: refused, ipv6 only</td>") {
		t.Errorf("the index's verdict cell does not say \"proxy: refused, ipv6 only\":\n%s", body)
	}
}
