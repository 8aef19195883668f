//go:build tools

// Package tools pins the helm binary that `make helm-check` and deploy/helm_test.go run against the
// chart in deploy/helm/svcprobe. It is its own module so the exporter's go.mod does not carry helm
// and its dependencies; helm is built from the Go module proxy, never downloaded as a release.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
