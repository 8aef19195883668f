package main

import (
	"strings"
	"testing"
	"time"
)

func TestStatusKB(t *testing.T) {
	in := "Name:\tbench\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n"
	if got, err := statusKB(strings.NewReader(in), "VmRSS"); err != nil || got != 1024 {
		t.Fatalf("VmRSS = %d, %v; want 1024", got, err)
	}
	if _, err := statusKB(strings.NewReader(in), "VmSwap"); err == nil {
		t.Fatal("missing key: want an error")
	}
}

func TestParseCPUStat(t *testing.T) {
	in := "cpu  10 1 5 80 4 0 0 0 0 0\ncpu0 5 0 2 40 2 0 0 0 0 0\n"
	s, err := parseCPUStat(strings.NewReader(in))
	if err != nil || s.total != 100 || s.busy != 16 {
		t.Fatalf("got %+v, %v; want busy 16 of 100", s, err)
	}
	if b := machineBusy(cpuStat{0, 0}, s); b != 0.16 {
		t.Fatalf("busy = %v", b)
	}
}

func TestParseProcNetTCP(t *testing.T) {
	// Port 0x9C40 = 40000 is ours: one listener, one established client socket, one TIME_WAIT,
	// one SYN_SENT; the last line is someone else's.
	in := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:9C40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:8000 0A000A7F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:8001 0A000A7F:9C40 06 00000000:00000000 03:00001234 00000000     0        0 0 3 0000000000000000
   3: 0100007F:8002 0A000A7F:9C40 02 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:8003 0100007F:0050 06 00000000:00000000 03:00001234 00000000     0        0 0 3 0000000000000000
`
	c, err := parseProcNetTCP(strings.NewReader(in), map[int]bool{40000: true})
	if err != nil {
		t.Fatal(err)
	}
	if c != (SockCount{Established: 1, TimeWait: 1, Other: 1}) { // the TIME_WAIT is the client's end
		t.Fatalf("got %+v", c)
	}
	if _, err := parseProcNetTCP(strings.NewReader("header\n 0: nonsense x 01\n"), nil); err == nil {
		t.Fatal("malformed line: want an error")
	}
}

func TestWindows(t *testing.T) {
	start := time.Unix(1000, 0)
	w := []int64{1, 2, 3, 4, 5}
	// [1.5 s, 4.2 s): whole windows 2 and 3.
	if m, n := maxWindow(w, start, start.Add(1500*time.Millisecond), start.Add(4200*time.Millisecond)); m != 4 || n != 2 {
		t.Fatalf("maxWindow = %d over %d windows; want 4 over 2", m, n)
	}
	// Sums count the partial windows at both ends.
	if s := sumWindows(w, start, start.Add(1500*time.Millisecond), start.Add(4200*time.Millisecond)); s != 2+3+4+5 {
		t.Fatalf("sumWindows = %d", s)
	}
}

func TestCountSeries(t *testing.T) {
	body := "# TYPE a gauge\na{namespace=\"x\",service=\"svc-00001\"} 1\nb 2\n# EOF\n"
	if all, per := countSeries(body); all != 2 || per != 1 {
		t.Fatalf("got %d, %d", all, per)
	}
}

func TestAddr127(t *testing.T) {
	seen := map[string]bool{}
	for i := range 100_000 {
		a := endpointIP(i/10, i%10, 10)
		b := a.As4()
		if b[0] != 127 || b[3] == 0 || b[3] == 255 || seen[a.String()] {
			t.Fatalf("endpoint %d: %s", i, a)
		}
		seen[a.String()] = true
	}
	for i := range 10_000 {
		if a := clusterIP(i); seen[a.String()] {
			t.Fatalf("ClusterIP %s collides with an endpoint", a)
		}
	}
}
