# svcprobe. `make demo` and `make test` are the two commands a new user runs.
GO            ?= go
BIN           := bin
VERSION       ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS       := -s -w -X github.com/prometheus/common/version.Version=$(VERSION) \
                 -X github.com/prometheus/common/version.Revision=$(shell git rev-parse HEAD 2>/dev/null) \
                 -X github.com/prometheus/common/version.Branch=$(shell git rev-parse --abbrev-ref HEAD 2>/dev/null)
export SVCPROBE_CACHE ?= $(HOME)/.cache/svcprobe

.PHONY: all build build-all image image-deps test unit vet fmt-check fuzz clean

FUZZTIME ?= 30s

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/svcprobe ./cmd/exporter

## build-all: the binary for every platform we ship (Windows nodes included).
build-all:
	@for p in linux/amd64 linux/arm64 windows/amd64; do \
		os=$${p%/*}; arch=$${p#*/}; ext=; [ $$os = windows ] && ext=.exe; \
		echo "build $$os/$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/svcprobe-$$os-$$arch$$ext ./cmd/exporter || exit 1; \
	done

## image-deps: Debian's buildah, which builds and runs the image without a Docker daemon.
image-deps:
	@command -v buildah >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah)

## image: the container image, without a Docker daemon (Debian's buildah, vfs storage, chroot isolation).
image: build image-deps
	buildah --storage-driver vfs bud --isolation chroot --build-arg VERSION=$(VERSION) -t svcprobe:$(VERSION) .

## test: every test (unit, race detector, goroutine leaks; and the lab end-to-end tests, whose
## Debian packages and upstream binaries are installed/built first, cached by version).
test: lab-deps lab-tools prom-tools helm-tools image-deps browser-deps fmt-check vet helm-check unit deploy-check lab-e2e

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# The lab package runs on its own (lab-e2e, from lab/lab.mk), after the rest: its fault catalogue
# has time limits and should not share the two cores with every other package's tests.
unit:
	$(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v '/lab$$')

## fuzz: each fuzz target for FUZZTIME, then keeps up to FUZZ_KEEP of the inputs the fuzzer found
## interesting in the target's testdata/fuzz (the corpus `go test` replays as seeds on every run;
## failures are saved there by go test itself).
FUZZ_TARGETS := discovery:FuzzParseAnnotations probe:FuzzDNSAnswer probe:FuzzParseResolvConf cmd/exporter:FuzzParseFileConfig
FUZZ_KEEP    ?= 40

fuzz:
	@cache=$$($(GO) env GOCACHE)/fuzz/github.com/svcprobe/svcprobe; \
	for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; name=$${t#*:}; \
		echo "fuzz: $$name ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) ./$$pkg || exit 1; \
		mkdir -p $$pkg/testdata/fuzz/$$name; \
		ls -t $$cache/$$pkg/$$name 2>/dev/null | head -n $(FUZZ_KEEP) | \
			while read f; do cp -n $$cache/$$pkg/$$name/$$f $$pkg/testdata/fuzz/$$name/; done; \
		echo "fuzz: $$(ls $$pkg/testdata/fuzz/$$name | wc -l) corpus entries in $$pkg/testdata/fuzz/$$name"; \
	done

clean:
	rm -rf $(BIN)

-include lab/lab.mk
-include web/web.mk
-include bench/bench.mk
-include deploy/check/check.mk
-include deploy/helm/helm.mk
-include soak.mk
