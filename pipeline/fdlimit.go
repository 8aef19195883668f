package pipeline

import "log/slog"

// fitConcurrency lowers the socket cap (--probe.concurrency) when RLIMIT_NOFILE cannot hold that
// many sockets beside what the exporter itself needs (its listeners, scrapes, the API server
// connection, logs): probes then wait for a slot (rounds stretch, svcprobe_budget_waits_total and
// svcprobe_scheduler_lag_seconds say so) instead of failing with EMFILE and starving /metrics.
// A quarter of the free descriptors, at least 16 and at most 64, stay for the exporter.
func fitConcurrency(want int, log *slog.Logger) int {
	limit, open, ok := fdRoom()
	if !ok {
		return want
	}
	return fitConcurrencyTo(want, limit, open, log)
}

func fitConcurrencyTo(want, limit, open int, log *slog.Logger) int {
	free := limit - open
	reserve := min(64, max(16, free/4))
	room := max(1, free-reserve)
	if want <= room {
		return want
	}
	log.Warn("--probe.concurrency lowered to fit the open-files limit; raise `ulimit -n` (RLIMIT_NOFILE) or expect rounds to stretch",
		"probe.concurrency", want, "used", room, "rlimit_nofile", limit, "open", open, "kept_for_the_exporter", reserve)
	return room
}
