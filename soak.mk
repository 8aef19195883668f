# soak: included by the top Makefile (-include soak.mk).

SOAK_ROUNDS   ?= 10000
SOAK_MAX_TIME ?= 20m

.PHONY: soak

## soak: SOAK_ROUNDS probe rounds (default 10,000, capped at SOAK_MAX_TIME) of the real exporter
## wiring over a fake cluster whose Services are created, updated and deleted at random, endpoints
## on loopback listeners; goroutines, fds and RSS sampled at start and end, verdict series checked
## against the live set. No -race: RSS is measured as shipped. The last line is SOAK PASS or SOAK FAIL.
## (`make test` runs the same test for 300 rounds.)
soak:
	@out=$$(mktemp); \
	SVCPROBE_SOAK_ROUNDS=$(SOAK_ROUNDS) SVCPROBE_SOAK_MAX_TIME=$(SOAK_MAX_TIME) SVCPROBE_SOAK_SUMMARY=$$out \
		$(GO) test -count=1 -timeout 60m -run '^TestSoak$$' -v ./cmd/exporter; rc=$$?; \
	if [ -s $$out ]; then line=$$(cat $$out); else line="SOAK FAIL the soak test did not finish (go test exit $$rc)"; fi; \
	rm -f $$out; \
	case "$$line" in "SOAK PASS"*) [ $$rc -eq 0 ] || { line="SOAK FAIL go test exit $$rc after: $$line"; }; ;; esac; \
	echo "$$line"; case "$$line" in "SOAK PASS"*) exit 0;; *) exit 1;; esac
