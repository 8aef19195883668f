// Package probe runs the "Debug Services" runbook against a discovery.Target: one file per stage
// (spec, endpoints, dns, pod, proxy, nodeport, hairpin), each behind the Prober interface, plus the
// Scheduler that spreads the probes over the interval within the configured budgets.
//
// It reads targets, opens sockets and hands Results to a Sink; it never talks to the API server
// and never builds metrics.
package probe
