package discovery

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// badAnnotationValues are wrong for every svcprobe.io/ key: wrong types, a value far over the
// size limit, markup, control bytes, invalid UTF-8.
func badAnnotationValues() map[string]string {
	return map[string]string{
		"empty":        "",
		"1MiB":         strings.Repeat("A", 1<<20),
		"markup":       `<script>alert("x")</script>`,
		"json":         `{"path": 1}`,
		"negative":     "-1",
		"huge number":  "99999999999999999999999999",
		"control":      "\x00\x1b[31m\r\n",
		"invalid utf8": "\xff\xfe",
		"float":        "2.5e2",
	}
}

// annotationKeys is every key svcprobe reads, with and without a port suffix where it takes one.
func annotationKeys() []string {
	return []string{
		AnnotationSkip, AnnotationPorts, AnnotationHTTPPath, AnnotationHTTPStatus,
		AnnotationHTTPPath + ".web", AnnotationHTTPStatus + ".8080", AnnotationPrefix + "no-such-key",
	}
}

// Every key with every bad value: one clear error naming the key, the option left at its default,
// and an error message that stays short and printable whatever the value held.
func TestParseAnnotationsEveryKeyEveryBadValue(t *testing.T) {
	for _, key := range annotationKeys() {
		for what, value := range badAnnotationValues() {
			ann := map[string]string{key: value}
			if strings.HasPrefix(key, AnnotationHTTPStatus+".") {
				ann[AnnotationHTTPPath+".8080"] = "/ok" // so the status is not merely "ignored"
			}
			opts, errs := ParseAnnotations(ann)
			if len(errs) != 1 {
				t.Errorf("%s=%s: %d errors %v, want exactly one", key, what, len(errs), errs)
				continue
			}
			msg := errs[0].Error()
			if !strings.Contains(msg, key) {
				t.Errorf("%s=%s: error %q does not name the key", key, what, msg)
			}
			if len(msg) > 400 || !utf8.ValidString(msg) || strings.ContainsAny(msg, "\x00\x1b\r\n") {
				t.Errorf("%s=%s: error not bounded/printable (%d bytes): %q", key, what, len(msg), msg)
			}
			if opts.Skip || opts.Ports != nil {
				t.Errorf("%s=%s: bad value leaked into options %+v", key, what, opts)
			}
			for port, h := range opts.HTTP {
				if port != "8080" || h.Path != "/ok" || h.StatusMin != 200 || h.StatusMax != 399 {
					t.Errorf("%s=%s: bad value leaked into HTTP options %q: %+v", key, what, port, h)
				}
			}
		}
	}
}

// Through the informers: a Service carrying every bad annotation at once (1 MiB values included)
// is still probed with defaults, each error is counted once (the metric), nothing crashes.
func TestWatcherSurvivesEveryMalformedAnnotation(t *testing.T) {
	s := service("default", "hostile", nil, svcPort("web", 80, intstr.FromInt32(80)))
	s.Annotations = map[string]string{}
	for _, k := range annotationKeys() {
		s.Annotations[k] = strings.Repeat("<b>", 1<<20/3)
	}
	client, sink, w := startWatcher(t, Config{}, s)
	eventually(t, "hostile probed anyway", func() bool { tg := sink.get("default/hostile"); return tg != nil })
	tg := sink.get("default/hostile")
	if len(tg.AnnotationErrors) != len(annotationKeys()) || tg.Options.Skip || tg.Options.Ports != nil || tg.Options.HTTP != nil {
		t.Fatalf("errors %d (want %d), options %+v", len(tg.AnnotationErrors), len(annotationKeys()), tg.Options)
	}
	if n := w.Stats().AnnotationErrors.Load(); n != uint64(len(annotationKeys())) {
		t.Fatalf("svcprobe_annotation_errors_total source counted %d, want %d", n, len(annotationKeys()))
	}
	// A new bad value is a new error; the Service stays probed.
	s.Annotations[AnnotationSkip] = "\xff"
	if _, err := client.CoreV1().Services("default").Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new value counted", func() bool { return w.Stats().AnnotationErrors.Load() == 2*uint64(len(annotationKeys())) })
	if sink.get("default/hostile") == nil {
		t.Fatal("the Service stopped being probed")
	}
}

// KnownAddress: ClusterIPs and Pod IPs are in the cluster; an EndpointSlice address is not made
// so by being in a slice (a hand-written slice may point anywhere).
func TestWatcherKnownAddress(t *testing.T) {
	ext := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "ext", UID: "uid-ext"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "169.254.169.254"}}
	manual := slice("default", "manual", "manual-1", 80, "", ep{ip: "169.254.169.253", ready: true})
	objs := append(hostnamesObjects(), ext, manual, service("default", "manual", nil))
	client, sink, w := startWatcher(t, Config{}, objs...)
	eventually(t, "targets", func() bool { return sink.get("default/manual") != nil && sink.get("default/ext") != nil })
	for addr, want := range map[string]bool{
		"198.19.0.20":        true, // hostnames' ClusterIP
		"198.18.0.5":         true, // hostnames-a's Pod IP
		"::ffff:198.18.0.5":  true,
		"169.254.169.253":    false, // only in a hand-written slice
		"169.254.169.254":    false, // only an ExternalName
		"198.18.0.6":         false,
		"2001:db8::1":        false,
		"::ffff:198.19.0.20": true,
	} {
		if got := w.KnownAddress(netip.MustParseAddr(addr)); got != want {
			t.Errorf("KnownAddress(%s) = %v, want %v", addr, got, want)
		}
	}
	if !w.KnownAddress(netip.MustParseAddr("198.19.0.20").WithZone("eth0")) {
		t.Error("a zone hides a known address")
	}
	// A Pod going away takes its address with it.
	if err := client.CoreV1().Pods("default").Delete(context.Background(), "hostnames-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the Pod's address forgotten", func() bool { return !w.KnownAddress(netip.MustParseAddr("198.18.0.5")) })
}
