//go:build tools

// Package tools pins the upstream Kubernetes commands the lab builds.
// It is never compiled into anything; `go build k8s.io/kubernetes/cmd/...`
// runs from this module.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
