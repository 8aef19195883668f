# helm.mk: the Helm chart's tools and checks. helm is built from its Go module (deploy/helm/tools
# pins helm.sh/helm/v3) and cached by version beside the lab's binaries; nothing is downloaded but
# Go modules. Included from the main Makefile; paths are relative to this file, so
# `make -f deploy/helm/helm.mk helm-check` works too.
#
#   make helm-tools   build helm into $(SVCPROBE_CACHE)/bin/helm-$(HELM_VERSION) (once per version)
#   make helm-check   helm lint + helm template of the chart with default and all-on values (the
#                     node agents, Linux and Windows, on), and bad values refused; for Kubernetes
#                     HELM_KUBE_VERSION (--kube-version), and Kubernetes 1.20 refused

HELM_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

HELM_VERSION := v3.22.0

SVCPROBE_CACHE ?= $(HOME)/.cache/svcprobe
HELM_BIN       := $(SVCPROBE_CACHE)/bin
export SVCPROBE_CACHE

HELM := $(HELM_BIN)/helm-$(HELM_VERSION)
export HELM

HELM_GO_BUILD := GOWORK=off GOFLAGS=-buildvcs=false nice -n 10 go build -p 2 -trimpath -ldflags '-s -w'

# The Kubernetes version helm lint and template assume (--kube-version): without it this helm
# (built without the release's -X flags) assumes 1.20, below the chart's kubeVersion (>=1.21.0-0).
# The lab's: its kube-apiserver is v1.37.
HELM_KUBE_VERSION ?= 1.37.0
HELM_KV := --kube-version $(HELM_KUBE_VERSION)

HELM_CHART  := $(HELM_DIR)/svcprobe
HELM_ALL_ON := $(HELM_DIR)/ci/all-on-values.yaml

.PHONY: helm-tools helm-check

helm-tools: $(HELM)
	@echo "helm-tools: $(HELM)"

$(HELM):
	@mkdir -p $(HELM_BIN)
	@echo "helm-tools: building helm $(HELM_VERSION) (cold a few minutes)"
	@start=$$(date +%s); \
	cd $(HELM_DIR)/tools && $(HELM_GO_BUILD) -o $@.tmp helm.sh/helm/v3/cmd/helm \
		&& mv $@.tmp $@ && echo "helm-tools: helm done in $$(( $$(date +%s) - start ))s"

## helm-check: lint and render the chart with its defaults and with every option on; any error fails.
## deploy/helm_test.go (in `make unit`) compares the rendering with deploy/base.
helm-check: $(HELM)
	$(HELM) lint --strict $(HELM_KV) $(HELM_CHART)
	$(HELM) lint --strict $(HELM_KV) $(HELM_CHART) -f $(HELM_ALL_ON)
	$(HELM) template svcprobe $(HELM_CHART) $(HELM_KV) --namespace svcprobe >/dev/null
	$(HELM) template svcprobe $(HELM_CHART) $(HELM_KV) --namespace svcprobe -f $(HELM_ALL_ON) >/dev/null
	@if $(HELM) template svcprobe $(HELM_CHART) $(HELM_KV) -f $(HELM_DIR)/testdata/bad-type.yaml >/dev/null 2>&1; then \
		echo "helm-check: values.schema.json accepted $(HELM_DIR)/testdata/bad-type.yaml"; exit 1; fi
	@if $(HELM) template svcprobe $(HELM_CHART) $(HELM_KV) -f $(HELM_DIR)/testdata/bad-node-agent.yaml >/dev/null 2>&1; then \
		echo "helm-check: values.schema.json accepted Windows node agents without a nameserver ($(HELM_DIR)/testdata/bad-node-agent.yaml)"; exit 1; fi
	@if out=$$($(HELM) template svcprobe $(HELM_CHART) --kube-version 1.20.0 2>&1 >/dev/null); then \
		echo "helm-check: the chart rendered for Kubernetes 1.20 (Chart.yaml kubeVersion is >=1.21.0-0)"; exit 1; \
	elif ! echo "$$out" | grep -q 'chart requires kubeVersion'; then \
		echo "helm-check: Kubernetes 1.20 refused for another reason than kubeVersion: $$out"; exit 1; fi
	@echo "helm-check: lint and template pass with default and all-on values (node agents on) for Kubernetes $(HELM_KUBE_VERSION); a wrong type, a missing Windows nameserver and Kubernetes 1.20 fail"
