# svcprobe. `make demo` and `make test` are the two commands a new user runs.
GO            ?= go
BIN           := bin
VERSION       ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS       := -s -w -X github.com/prometheus/common/version.Version=$(VERSION) \
                 -X github.com/prometheus/common/version.Revision=$(shell git rev-parse HEAD 2>/dev/null) \
                 -X github.com/prometheus/common/version.Branch=$(shell git rev-parse --abbrev-ref HEAD 2>/dev/null)
export SVCPROBE_CACHE ?= $(HOME)/.cache/svcprobe

.PHONY: all build test unit vet lint fmt-check bench clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/svcprobe ./cmd/exporter

## test: every test (unit, race detector, goroutine leaks; and the lab end-to-end tests).
test: fmt-check vet unit

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 15m ./...

clean:
	rm -rf $(BIN)

-include lab/lab.mk
