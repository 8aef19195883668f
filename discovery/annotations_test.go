package discovery

import (
	"strings"
	"testing"
)

func TestParseAnnotationsValid(t *testing.T) {
	opts, errs := ParseAnnotations(map[string]string{
		AnnotationSkip:                  "false",
		AnnotationPorts:                 "http, 8080",
		AnnotationHTTPPath:              "/healthz",
		AnnotationHTTPStatus:            "200-299",
		AnnotationHTTPPath + ".admin":   "/ready",
		AnnotationHTTPStatus + ".admin": "204",
		"other.io/ignored":              "whatever",
	})
	if len(errs) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	if opts.Skip || !opts.Ports.Has(Port{Name: "http", Port: 80}) || !opts.Ports.Has(Port{Port: 8080}) || opts.Ports.Has(Port{Name: "x", Port: 81}) {
		t.Fatalf("options %+v", opts)
	}
	all, ok := opts.HTTPFor(Port{Name: "http", Port: 80})
	if !ok || all.Path != "/healthz" || !all.Accepts(250) || all.Accepts(300) {
		t.Fatalf("http for http: %+v %v", all, ok)
	}
	admin, ok := opts.HTTPFor(Port{Name: "admin", Port: 9000})
	if !ok || admin.Path != "/ready" || !admin.Accepts(204) || admin.Accepts(200) {
		t.Fatalf("http for admin: %+v %v", admin, ok)
	}
}

func TestParseAnnotationsSkip(t *testing.T) {
	opts, errs := ParseAnnotations(map[string]string{AnnotationSkip: "true"})
	if !opts.Skip || len(errs) != 0 {
		t.Fatalf("%+v %v", opts, errs)
	}
}

// Every malformed key yields one error naming it and leaves that option at its default, while
// the well-formed keys beside it still apply.
func TestParseAnnotationsMalformed(t *testing.T) {
	cases := map[string]string{
		AnnotationSkip:                   "yes please",
		AnnotationPorts:                  "http,99999",
		AnnotationHTTPPath:               "healthz",
		AnnotationHTTPStatus:             "2xx",
		AnnotationHTTPPath + ".Bad_Name": "/x",
		AnnotationHTTPStatus + ".web":    "600",
		AnnotationPrefix + "unknown":     "1",
		AnnotationPorts + ".web":         "http",
	}
	for k, v := range cases {
		t.Run(k, func(t *testing.T) {
			opts, errs := ParseAnnotations(map[string]string{k: v, AnnotationHTTPPath + ".good": "/ok"})
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), k) {
				t.Fatalf("errors %v, want one naming %s", errs, k)
			}
			if opts.Skip || opts.Ports != nil {
				t.Fatalf("malformed value leaked into options: %+v", opts)
			}
			if h, ok := opts.HTTPFor(Port{Name: "good", Port: 1}); !ok || h.Path != "/ok" {
				t.Fatalf("the good key was dropped with the bad one: %+v", opts)
			}
		})
	}
}

func TestParseAnnotationsHugeAndMarkup(t *testing.T) {
	huge := strings.Repeat("a", 5000)
	_, errs := ParseAnnotations(map[string]string{AnnotationHTTPPath: "/" + huge, AnnotationPorts: "<script>alert(1)</script>"})
	if len(errs) != 2 {
		t.Fatalf("errors %v", errs)
	}
	for _, e := range errs {
		if len(e.Error()) > 300 {
			t.Fatalf("error message not bounded: %d bytes", len(e.Error()))
		}
	}
}

func FuzzParseAnnotations(f *testing.F) {
	f.Add("skip", "true")
	f.Add("http-path.web", "/healthz")
	f.Add("http-status", "200-399")
	f.Add("ports", "http,80")
	f.Fuzz(func(t *testing.T, key, value string) {
		opts, errs := ParseAnnotations(map[string]string{AnnotationPrefix + key: value})
		for _, h := range opts.HTTP {
			if h.StatusMin < 100 || h.StatusMax > 599 || h.StatusMin > h.StatusMax || !strings.HasPrefix(h.Path, "/") {
				t.Fatalf("accepted invalid HTTP options %+v from %q=%q", h, key, value)
			}
		}
		for _, e := range errs {
			if e.Error() == "" {
				t.Fatal("empty error")
			}
		}
	})
}
