// Package metrics owns the results store (keyed by Service UID) and the collectors that turn it
// into series at scrape time, including the per-Service verdict. Because every series is built
// from the store when Prometheus scrapes, a deleted Service or endpoint leaves nothing behind.
//
// It reads discovery targets and probe results; it never probes and never talks to the API.
package metrics
