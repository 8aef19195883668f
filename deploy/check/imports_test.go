package check

// The upstream packages the tests of this module read the shipped files with. Listed here once so
// go.mod is settled before the tests that use them are written.
import (
	_ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	_ "github.com/prometheus/alertmanager/config"
	_ "github.com/prometheus/alertmanager/inhibit"
	_ "github.com/prometheus/prometheus/model/rulefmt"
	_ "github.com/prometheus/prometheus/promql/parser"
	_ "sigs.k8s.io/yaml"
)
