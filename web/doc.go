// Package web owns the human and JSON views of the results store: the status page (a matrix of
// Services by stage), the per-Service runbook walk, and /api/v1/services. The JSON documents are
// defined here with explicit, stable snake_case field names; `svcprobe diagnose -o json` prints
// the same documents.
//
// It only reads metrics.Store snapshots: it never probes, never talks to the API server and
// never writes to the store. Everything it serves is embedded in the binary and rendered with
// html/template, so whatever comes from the cluster (names, labels, annotations, details) is
// escaped.
package web
