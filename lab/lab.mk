# lab.mk: build and run the svcprobe end-to-end lab (a real one-node
# Kubernetes control plane in network namespaces). Included from the main
# Makefile; every path here is relative to this file so `make -f lab/lab.mk`
# works too.
#
#   make lab-deps    apt-get the network tools when missing
#   make lab-tools   build etcd, kube-apiserver, kube-controller-manager,
#                    kube-proxy, coredns into $(LAB_BIN) (once per version)
#   make lab-kubectl kubectl of the same version (optional, for poking by hand)
#   make lab-up / lab-down / lab-status
#   make lab-test    the lab's own test: up, DNS + VIP checks, down (needs root)
#   make lab-e2e     the fault catalogue end to end (needs root, ~3 min)
#   make demo        lab + svcprobe as a Pod + example Services; prints where to look
#   make demo-break FAULT=name / demo-fix FAULT=name / demo-faults / demo-down
#   make demo-node-local-dns ON=on|off   the exporter on the node-local DNS cache (169.254.20.10) or not
#   make demo-proxy-mode MODE=nftables|iptables   switch the lab's kube-proxy (SVCPROBE_LAB_PROXY_MODE at up)
#   make demo-dual-stack ON=on|off   add (remove) the Services of each ipFamilyPolicy

LAB_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

K8S_VERSION     := v1.37.2
ETCD_VERSION    := v3.6.16
COREDNS_VERSION := v1.15.0
KNP_VERSION     := v0.8.0

SVCPROBE_CACHE ?= $(HOME)/.cache/svcprobe
LAB_BIN        := $(SVCPROBE_CACHE)/bin
export SVCPROBE_CACHE

# Be kind to whoever else compiles on this 2-core machine.
LAB_GO_BUILD := GOWORK=off GOFLAGS=-buildvcs=false nice -n 10 go build -p 2 -trimpath

K8S_LDFLAGS := -s -w \
	-X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=37 \
	-X k8s.io/component-base/version.gitTreeState=clean \
	-X k8s.io/client-go/pkg/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/client-go/pkg/version.gitMajor=1 \
	-X k8s.io/client-go/pkg/version.gitMinor=37

LAB_K8S_CMDS := kube-apiserver kube-controller-manager kube-proxy

LAB_TOOLS := \
	$(LAB_BIN)/etcd-$(ETCD_VERSION) \
	$(LAB_BIN)/coredns-$(COREDNS_VERSION) \
	$(LAB_BIN)/kube-network-policies-$(KNP_VERSION) \
	$(foreach c,$(LAB_K8S_CMDS),$(LAB_BIN)/$(c)-$(K8S_VERSION))

.PHONY: lab-deps lab-tools lab-kubectl lab-up lab-down lab-status lab-test lab-e2e demo demo-down demo-break demo-fix demo-faults demo-node-local-dns demo-proxy-mode demo-dual-stack lab-exporter

lab-deps:
	@missing=""; \
	for c in ip:iproute2 iptables:iptables conntrack:conntrack nft:nftables; do \
		command -v $${c%%:*} >/dev/null 2>&1 || missing="$$missing $${c#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "lab-deps: installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
		echo "lab-deps: ip, iptables, conntrack, nft present"; \
	fi

# The binaries are keyed by version and have no other prerequisite, so a
# second `make lab-tools` is a few stat calls.
lab-tools: $(LAB_TOOLS)
	@echo "lab-tools: all present in $(LAB_BIN)"

lab-kubectl: $(LAB_BIN)/kubectl-$(K8S_VERSION)
	@echo "lab-kubectl: $<"

$(LAB_BIN)/etcd-$(ETCD_VERSION):
	@mkdir -p $(LAB_BIN)
	@echo "lab-tools: building etcd $(ETCD_VERSION) (cold ~1.5 min)"
	@start=$$(date +%s); \
	cd $(LAB_DIR)/tools/etcd && $(LAB_GO_BUILD) -ldflags '-s -w' -o $@.tmp go.etcd.io/etcd/server/v3 \
		&& mv $@.tmp $@ && echo "lab-tools: etcd done in $$(( $$(date +%s) - start ))s"

$(LAB_BIN)/coredns-$(COREDNS_VERSION):
	@mkdir -p $(LAB_BIN)
	@echo "lab-tools: building coredns $(COREDNS_VERSION) (cold 3-14 min, depending on load)"
	@start=$$(date +%s); \
	cd $(LAB_DIR)/tools/coredns && $(LAB_GO_BUILD) -ldflags '-s -w' -o $@.tmp github.com/coredns/coredns \
		&& mv $@.tmp $@ && echo "lab-tools: coredns done in $$(( $$(date +%s) - start ))s"

$(LAB_BIN)/kube-network-policies-$(KNP_VERSION):
	@mkdir -p $(LAB_BIN)
	@echo "lab-tools: building kube-network-policies $(KNP_VERSION) (cold ~3-6 min)"
	@start=$$(date +%s); \
	cd $(LAB_DIR)/tools/kube-network-policies && $(LAB_GO_BUILD) -ldflags '-s -w' -o $@.tmp sigs.k8s.io/kube-network-policies/cmd \
		&& mv $@.tmp $@ && echo "lab-tools: kube-network-policies done in $$(( $$(date +%s) - start ))s"

$(LAB_BIN)/%-$(K8S_VERSION):
	@mkdir -p $(LAB_BIN)
	@echo "lab-tools: building $* $(K8S_VERSION) (cold: the first Kubernetes command ~10-20 min on 2 busy cores, the others reuse its build cache)"
	@start=$$(date +%s); \
	cd $(LAB_DIR)/tools/kubernetes && $(LAB_GO_BUILD) -ldflags '$(K8S_LDFLAGS)' -o $@.tmp k8s.io/kubernetes/cmd/$* \
		&& mv $@.tmp $@ && echo "lab-tools: $* done in $$(( $$(date +%s) - start ))s"

LAB_CMD := GOWORK=off go run ./$(LAB_DIR)/cmd/svcprobe-lab

lab-up: lab-deps lab-tools
	$(LAB_CMD) up

lab-down:
	$(LAB_CMD) down

lab-status:
	$(LAB_CMD) status

lab-test: lab-deps lab-tools
	SVCPROBE_E2E=1 GOWORK=off go test -count=1 -run TestLabHostnames -v -timeout 10m ./$(LAB_DIR)/

# prom-tools (deploy/check/check.mk) and helm-tools (deploy/helm/helm.mk): TestAlerts runs a real
# Prometheus with the shipped rules, the dry-run tests render the Helm chart. ~56 min under CI
# (TestAlerts 19 min, the catalogue again in nftables mode 8 min, the 5-minute API outage, the
# 5-minute steady run); the timeout leaves room above that, below CI's own limit.
lab-e2e: lab-deps lab-tools prom-tools helm-tools
	SVCPROBE_E2E=1 GOWORK=off go test -race -count=1 -v -timeout 75m ./$(LAB_DIR)/

# The exporter binary the demo runs as a Pod (the main Makefile's `build`
# makes the same file, with version ldflags).
LAB_EXPORTER := $(LAB_DIR)/../bin/svcprobe

lab-exporter:
	@echo "demo: building the exporter ($(LAB_EXPORTER))"
	$(MAKE) --no-print-directory -C $(LAB_DIR)/.. build

# DEMO_INTERVAL: the exporter's --probe.interval in the demo.
DEMO_INTERVAL ?= 5s

demo: lab-deps lab-tools lab-exporter
	@echo "demo: starting the lab, svcprobe and the example Services"
	$(LAB_CMD) demo --exporter $(LAB_EXPORTER) --interval $(DEMO_INTERVAL)

demo-down:
	$(LAB_CMD) down

demo-faults:
	@$(LAB_CMD) faults

demo-break:
	@test -n "$(FAULT)" || { echo "usage: make demo-break FAULT=<name>; the faults:"; $(LAB_CMD) faults; exit 2; }
	$(LAB_CMD) break $(FAULT)

demo-fix:
	@test -n "$(FAULT)" || { echo "usage: make demo-fix FAULT=<name>"; exit 2; }
	$(LAB_CMD) fix $(FAULT)

# ON=on points the demo's exporter Pod at the node-local DNS cache, ON=off back at kube-dns.
ON ?= on
demo-node-local-dns:
	$(LAB_CMD) node-local-dns $(ON)

# MODE=nftables switches the running lab's kube-proxy to nftables mode, MODE=iptables back.
MODE ?= nftables
demo-proxy-mode:
	$(LAB_CMD) proxy-mode $(MODE)

demo-dual-stack:
	$(LAB_CMD) dual-stack $(ON)
