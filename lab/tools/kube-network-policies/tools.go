//go:build tools

// Package tools pins kube-network-policies, the NetworkPolicy enforcement the lab runs on its
// nodes (the reference implementation of the Kubernetes network SIG, nftables and nfqueue).
package tools

import _ "sigs.k8s.io/kube-network-policies/cmd"
