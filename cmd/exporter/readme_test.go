package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
)

// The README must stay true: every flag the binary accepts is in its Flags section, and every
// metric family the exporter exposes (docs/metric-names.txt, checked against a real scrape by
// TestMetricNamesFile) is in its metrics tables. A flag or metric added without its README line
// fails here.
func TestREADMEDocumentsEveryFlagAndMetric(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	section := func(title string) string {
		i := strings.Index(readme, "\n## "+title+"\n")
		if i < 0 {
			t.Fatalf("README has no %q section", title)
		}
		rest := readme[i+len(title)+5:]
		if j := strings.Index(rest, "\n## "); j >= 0 {
			rest = rest[:j]
		}
		return rest
	}
	flags := section("Flags")
	app := kingpin.New("svcprobe", "")
	registerFlags(app)
	kingpinflag.AddFlags(app, ":9817")
	promslogflag.AddFlags(app, &promslog.Config{})
	n := 0
	for _, f := range app.Model().Flags {
		if f.Hidden || f.Name == "help" || f.Name == "version" || f.Name == "web.systemd-socket" {
			continue
		}
		n++
		if !strings.Contains(flags, "`--"+f.Name+"`") {
			t.Errorf("flag --%s is not in the README's Flags table", f.Name)
		}
	}
	if n < 20 {
		t.Fatalf("only %d flags found; the registration changed?", n)
	}

	names, err := os.ReadFile("../../docs/metric-names.txt")
	if err != nil {
		t.Fatal(err)
	}
	metrics := section("Metrics")
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("`(svcprobe_[a-z_]+)`").FindAllStringSubmatch(metrics, -1) {
		documented[m[1]] = true
	}
	// "`svcprobe_scheduler_lag_seconds` / `_max_lag_seconds`" style rows: the short form names a
	// sibling of the row's first metric.
	for _, m := range regexp.MustCompile("`(svcprobe_[a-z]+)_[a-z_]+` / `(_[a-z_]+)`").FindAllStringSubmatch(metrics, -1) {
		documented[m[1]+m[2]] = true
	}
	for _, name := range strings.Fields(string(names)) {
		if !documented[name] {
			t.Errorf("metric %s is not in the README's Metrics section", name)
		}
	}
}
