package main

import "testing"

// The transform is what keeps --discovery.workloads cheap: the informer's heap per Deployment
// with it is a fraction of the untrimmed one, and both are measured (not zero).
func TestWorkloadMemoryTrimmed(t *testing.T) {
	trimmed, full, err := workloadMemory(2000)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("per Deployment: %.0f B trimmed, %.0f B untrimmed", trimmed, full)
	if trimmed <= 0 || full <= 0 || trimmed > full/2 {
		t.Fatalf("trimmed %.0f B, untrimmed %.0f B: want both measured and the trimmed at most half", trimmed, full)
	}
}
