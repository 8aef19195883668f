# check.mk: the upstream Prometheus tools the rule, dashboard and Alertmanager checks run, built
# from this module (deploy/check/go.mod pins the versions) and cached by version beside the lab's.
# Included from the main Makefile.
#
#   make prom-tools   build prometheus, promtool and amtool into $(SVCPROBE_CACHE)/bin (once per version)

CHECK_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

PROMETHEUS_VERSION   := v0.316.0
ALERTMANAGER_VERSION := v0.35.0

SVCPROBE_CACHE ?= $(HOME)/.cache/svcprobe
PROM_BIN       := $(SVCPROBE_CACHE)/bin
export SVCPROBE_CACHE

PROMETHEUS := $(PROM_BIN)/prometheus-$(PROMETHEUS_VERSION)
PROMTOOL   := $(PROM_BIN)/promtool-$(PROMETHEUS_VERSION)
AMTOOL     := $(PROM_BIN)/amtool-$(ALERTMANAGER_VERSION)
export PROMETHEUS PROMTOOL AMTOOL

PROM_GO_BUILD := GOWORK=off GOFLAGS=-buildvcs=false nice -n 10 go build -p 2 -trimpath -ldflags '-s -w'

.PHONY: prom-tools

prom-tools: $(PROMETHEUS) $(PROMTOOL) $(AMTOOL)
	@echo "prom-tools: all present in $(PROM_BIN)"

$(PROMETHEUS):
	@mkdir -p $(PROM_BIN)
	@echo "prom-tools: building prometheus $(PROMETHEUS_VERSION) (cold a few minutes)"
	@start=$$(date +%s); \
	cd $(CHECK_DIR) && $(PROM_GO_BUILD) -o $@.tmp github.com/prometheus/prometheus/cmd/prometheus \
		&& mv $@.tmp $@ && echo "prom-tools: prometheus done in $$(( $$(date +%s) - start ))s"

$(PROMTOOL):
	@mkdir -p $(PROM_BIN)
	@echo "prom-tools: building promtool $(PROMETHEUS_VERSION)"
	@start=$$(date +%s); \
	cd $(CHECK_DIR) && $(PROM_GO_BUILD) -o $@.tmp github.com/prometheus/prometheus/cmd/promtool \
		&& mv $@.tmp $@ && echo "prom-tools: promtool done in $$(( $$(date +%s) - start ))s"

$(AMTOOL):
	@mkdir -p $(PROM_BIN)
	@echo "prom-tools: building amtool $(ALERTMANAGER_VERSION)"
	@start=$$(date +%s); \
	cd $(CHECK_DIR) && $(PROM_GO_BUILD) -o $@.tmp github.com/prometheus/alertmanager/cmd/amtool \
		&& mv $@.tmp $@ && echo "prom-tools: amtool done in $$(( $$(date +%s) - start ))s"

.PHONY: deploy-check

## deploy-check: the tests of deploy/check (rules with promtool, Alertmanager inhibition, dashboards'
## PromQL, prometheus-operator objects). They find the tools through PROMTOOL/PROMETHEUS/AMTOOL.
deploy-check: prom-tools
	cd $(CHECK_DIR) && GOWORK=off go test -race -count=1 -timeout 15m ./...
