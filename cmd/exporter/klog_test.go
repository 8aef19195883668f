package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"k8s.io/klog/v2"
)

// client-go logs through klog; routed, its lines are the exporter's JSON lines, with the
// component, and klog's verbose levels are filtered by the exporter's level.
func TestKlogGoesThroughSlog(t *testing.T) {
	var buf bytes.Buffer
	routeKlog(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	defer klog.ClearLogger()
	klog.InfoS("watch of *v1.Pod ended", "reason", "expired")
	klog.ErrorS(nil, "failed to list *v1.Service", "resource", "services")
	klog.V(4).InfoS("a verbose line")
	klog.Flush()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2 (the verbose one filtered):\n%s", len(lines), buf.String())
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q (%v)", l, err)
		}
		if m["component"] != "client-go" {
			t.Errorf("line %q lacks component=client-go", l)
		}
	}
	if !strings.Contains(lines[0], `"msg":"watch of *v1.Pod ended"`) || !strings.Contains(lines[1], `"level":"ERROR"`) {
		t.Errorf("unexpected lines:\n%s", buf.String())
	}
}
