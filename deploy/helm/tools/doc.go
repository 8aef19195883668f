// Package tools is the module that pins helm (see tools.go, behind the "tools" build tag):
// deploy/helm/helm.mk builds helm.sh/helm/v3/cmd/helm from it into $SVCPROBE_CACHE/bin.
package tools
