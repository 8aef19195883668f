//go:build tools

// Package check holds the tests that prove what deploy/ and dashboards/ ship, with the upstream
// code that reads them: Prometheus' PromQL parser and promtool, Alertmanager's config and
// inhibition packages, prometheus-operator's API types. It is its own module so the exporter's
// go.mod does not carry Prometheus, Alertmanager or the operator.
//
// The imports below pin the binaries `make` builds from this module (prometheus and promtool for
// the rule tests and the lab, amtool for checking the Alertmanager config).
package check

import (
	_ "github.com/prometheus/alertmanager/cli"
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
