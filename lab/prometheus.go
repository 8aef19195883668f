package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// PrometheusVersion is the Prometheus the lab runs: deploy/check/check.mk builds it from the
// prometheus module into the same cache (`make prom-tools`);
// TestPrometheusVersionMatchesMakefile keeps the two in step.
const PrometheusVersion = "v0.316.0"

// PrometheusAddr is where the lab's Prometheus listens, on the loopback of the node namespace (the
// host reaches it with NetnsDialer(NodeNetns), like the exporter).
const PrometheusAddr = "127.0.0.1:19090"

// PrometheusOptions says how StartPrometheus runs Prometheus.
type PrometheusOptions struct {
	// Binary is the prometheus executable. Default $PROMETHEUS, else
	// BinDir/prometheus-PrometheusVersion.
	Binary string
	// RulesDir holds the rule files loaded unchanged (*.yaml). Default deploy/rules next to
	// Config.DeployDir.
	RulesDir string
	// ScrapeInterval and EvalInterval default to 2s (the e2e exporter probes every 2s).
	ScrapeInterval time.Duration
	EvalInterval   time.Duration
	// ExtraTargets are more host:port addresses to scrape /metrics from, in a second job
	// (ExtraJob), with honor_labels: true like the exporter's: the node agents' Pod IP:9817
	// (NodeAgentPod, ExporterPort), reached from the node namespace over the Pod network (node-2's
	// /24 is routed). Empty: only the exporter is scraped.
	ExtraTargets []string
	// ExtraJob is the job name of ExtraTargets. Default "svcprobe-node" (the rules match jobs
	// starting with svcprobe).
	ExtraJob string
}

// PrometheusBinary is the prometheus executable StartPrometheus runs by default.
func (c *Config) PrometheusBinary() string {
	if p := os.Getenv("PROMETHEUS"); p != "" {
		return p
	}
	c.fill()
	return filepath.Join(c.BinDir, "prometheus-"+PrometheusVersion)
}

func (o *PrometheusOptions) fill(c *Config) {
	if o.Binary == "" {
		o.Binary = c.PrometheusBinary()
	}
	if o.RulesDir == "" {
		o.RulesDir = filepath.Join(filepath.Dir(c.DeployDir), "rules")
	}
	if o.ScrapeInterval == 0 {
		o.ScrapeInterval = 2 * time.Second
	}
	if o.EvalInterval == 0 {
		o.EvalInterval = 2 * time.Second
	}
	if o.ExtraJob == "" {
		o.ExtraJob = "svcprobe-node"
	}
}

// StartPrometheus runs Prometheus inside the node namespace, scraping the exporter Pod at
// ExporterIP:ExporterPort (over cbr0, no Service VIP, so it keeps scraping while kube-proxy is
// broken) with the rule files of RulesDir loaded as they are shipped, and the ExtraTargets in a
// second job. Its data lives in <state>/prometheus; StopPrometheus (or Down, which kills
// everything in the node namespace and clears the state) ends it. It waits until Prometheus is
// ready and has loaded the rules.
func StartPrometheus(ctx context.Context, c Config, o PrometheusOptions) error {
	c.fill()
	o.fill(&c)
	if _, err := os.Stat(o.Binary); err != nil {
		return fmt.Errorf("prometheus binary: %w (run `make prom-tools`)", err)
	}
	rules, err := filepath.Glob(filepath.Join(o.RulesDir, "*.yaml"))
	if err != nil {
		return err
	}
	if len(rules) == 0 {
		return fmt.Errorf("no rule files in %s", o.RulesDir)
	}
	for i, r := range rules {
		if rules[i], err = filepath.Abs(r); err != nil {
			return err
		}
	}
	dir := c.path("prometheus")
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return err
	}
	quoted := make([]string, len(rules))
	for i, r := range rules {
		quoted[i] = strconv.Quote(r)
	}
	conf := fmt.Sprintf(`# written by lab.StartPrometheus
global:
  scrape_interval: %s
  scrape_timeout: %s
  evaluation_interval: %s
rule_files: [%s]
scrape_configs:
  - job_name: svcprobe
    honor_labels: true
    static_configs:
      - targets: [%q]
`, o.ScrapeInterval, o.ScrapeInterval, o.EvalInterval, strings.Join(quoted, ", "), ExporterIP+":"+strconv.Itoa(ExporterPort))
	if len(o.ExtraTargets) > 0 {
		targets := make([]string, len(o.ExtraTargets))
		for i, tg := range o.ExtraTargets {
			if _, _, err := net.SplitHostPort(tg); err != nil {
				return fmt.Errorf("extra target %q: %w", tg, err)
			}
			targets[i] = strconv.Quote(tg)
		}
		conf += fmt.Sprintf(`  - job_name: %q
    honor_labels: true
    static_configs:
      - targets: [%s]
`, o.ExtraJob, strings.Join(targets, ", "))
	}
	confPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return err
	}
	if err := c.startComponent("prometheus", o.Binary,
		"--config.file="+confPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--storage.tsdb.retention.time=1d",
		"--web.listen-address="+PrometheusAddr,
		"--log.level=warn",
	); err != nil {
		return err
	}
	return waitFor(ctx, 60*time.Second, "prometheus ready with the rules loaded", func() error {
		if err := c.componentAlive("prometheus"); err != nil {
			return backoff.Permanent(c.withLog("prometheus", err))
		}
		var r struct {
			Groups []json.RawMessage `json:"groups"`
		}
		if err := QueryPrometheus(ctx, "/api/v1/rules", nil, &r); err != nil {
			return err
		}
		if len(r.Groups) == 0 {
			return fmt.Errorf("no rule groups loaded")
		}
		return nil
	})
}

// StopPrometheus stops the Prometheus StartPrometheus started and removes its data.
func StopPrometheus(c Config) error {
	c.fill()
	pid, marker, err := readPidFile(c.pidPath("prometheus"))
	if err == nil && alive(pid, marker) {
		killPids([]int{pid}, 5*time.Second)
		if exists(pid) {
			return fmt.Errorf("prometheus (pid %d) did not stop", pid)
		}
	}
	_ = os.Remove(c.pidPath("prometheus"))
	return os.RemoveAll(c.path("prometheus"))
}

var prometheusHTTP = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
	DialContext: NetnsDialer(NodeNetns), DisableKeepAlives: true}}

// QueryPrometheus GETs an /api/v1 path of the lab's Prometheus and decodes the "data" of a
// successful answer into data (nil: discard). An error answer's errorType and error come back as
// the error; warnings too, so a test sees them.
func QueryPrometheus(ctx context.Context, path string, params url.Values, data any) error {
	u := "http://" + PrometheusAddr + path
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := prometheusHTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	var env struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Warnings  []string        `json:"warnings"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return fmt.Errorf("GET %s: %s: %.200s", path, resp.Status, b)
	}
	if env.Status != "success" {
		return fmt.Errorf("GET %s: %s: %s", path, env.ErrorType, env.Error)
	}
	if len(env.Warnings) > 0 {
		return fmt.Errorf("GET %s: warnings: %s", path, strings.Join(env.Warnings, "; "))
	}
	if data == nil {
		return nil
	}
	return json.Unmarshal(env.Data, data)
}
