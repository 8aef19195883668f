# bench: the scalability benchmark of issue 7 (bench/README.md). Not part of `make test`.
# Loopback only (every address in 127.0.0.0/8); needs root for the DNS server on port 53.
# BENCH_FLAGS=-short for a quick run; BENCH_FLAGS=-soak=10m for the issue's 10-minute soak.
BENCH_FLAGS ?=

.PHONY: bench

bench:
	@mkdir -p bench/out
	$(GO) build -o $(BIN)/svcprobe-bench ./bench
	timeout 45m $(BIN)/svcprobe-bench -out bench/out -results bench/results.md $(BENCH_FLAGS)
