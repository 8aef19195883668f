// Command genrule writes deploy/prometheus-operator/prometheusrule.yaml from deploy/rules/*.yaml.
//
//	cd deploy/check && GOWORK=off go run ./cmd/genrule
//
// operator_test.go fails when the committed file differs from what this writes.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/svcprobe/svcprobe/deploy/check/cmd/genrule/promrule"
)

// Defaults, relative to deploy/check (where `go run` and the tests run).
const (
	DefaultRules = "../rules"
	DefaultOut   = "../prometheus-operator/prometheusrule.yaml"
)

func main() {
	rules := flag.String("rules", DefaultRules, "directory with the Prometheus rule files (*.yaml)")
	out := flag.String("o", DefaultOut, "PrometheusRule file to write ('-' for stdout)")
	flag.Parse()
	if err := run(*rules, *out); err != nil {
		fmt.Fprintln(os.Stderr, "genrule:", err)
		os.Exit(1)
	}
}

func run(rulesDir, out string) error {
	files, err := filepath.Glob(filepath.Join(rulesDir, "*.yaml"))
	if err != nil {
		return err
	}
	b, err := promrule.Generate(files, promrule.SvcprobeObject)
	if err != nil {
		return err
	}
	if out == "-" {
		_, err = os.Stdout.Write(b)
		return err
	}
	return os.WriteFile(out, b, 0o644)
}
