package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuTime is the CPU (user + system) this process has used: getrusage, never wall time, because
// the machine is shared.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// userTime is the user-mode part of cpuTime.
func userTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano())
}

// statusKB reads a "Key:   123 kB" line of /proc/self/status.
func statusKB(r io.Reader, key string) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != key {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			break
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, err
		}
		return n, nil
	}
	return 0, fmt.Errorf("%s not found", key)
}

// rssBytes is VmRSS of this process.
func rssBytes() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	kb, _ := statusKB(f, "VmRSS")
	return kb << 10
}

// loadAvg is /proc/loadavg's first three fields.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// cpuStat is the machine-wide busy and total jiffies of /proc/stat's first line.
type cpuStat struct{ busy, total uint64 }

func parseCPUStat(r io.Reader) (cpuStat, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 || f[0] != "cpu" {
			continue
		}
		var s cpuStat
		for i, v := range f[1:] {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return s, err
			}
			s.total += n
			if i != 3 && i != 4 { // idle, iowait
				s.busy += n
			}
		}
		return s, nil
	}
	return cpuStat{}, fmt.Errorf("no cpu line")
}

func readCPUStat() cpuStat {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return cpuStat{}
	}
	defer f.Close()
	s, _ := parseCPUStat(f)
	return s
}

// machineBusy is the fraction of all CPUs busy between two samples (everyone's work, ours too).
func machineBusy(a, b cpuStat) float64 {
	if b.total <= a.total {
		return 0
	}
	return float64(b.busy-a.busy) / float64(b.total-a.total)
}

// TCP states of /proc/net/tcp.
const (
	tcpEstablished = 0x01
	tcpTimeWait    = 0x06
	tcpListen      = 0x0A
)

// SockCount counts the sockets whose local or remote port is one of ours, by state.
type SockCount struct {
	Established int `json:"established"`
	TimeWait    int `json:"time_wait"`
	TimeWaitSrv int `json:"time_wait_server"` // of TimeWait: the listener's end (the server closed first)
	Other       int `json:"other"`            // SYN_SENT, FIN_WAIT, CLOSE_WAIT, ... (listeners excluded)
}

func (s SockCount) String() string {
	return fmt.Sprintf("%d ESTABLISHED, %d TIME_WAIT (%d server end), %d other", s.Established, s.TimeWait, s.TimeWaitSrv, s.Other)
}

// parseProcNetTCP counts /proc/net/tcp lines with either port in ports.
func parseProcNetTCP(r io.Reader, ports map[int]bool) (SockCount, error) {
	var c SockCount
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			continue
		}
		lp, err1 := hexPort(f[1])
		rp, err2 := hexPort(f[2])
		st, err3 := strconv.ParseUint(f[3], 16, 8)
		if err1 != nil || err2 != nil || err3 != nil {
			return c, fmt.Errorf("malformed line %q", sc.Text())
		}
		if !ports[lp] && !ports[rp] {
			continue
		}
		switch st {
		case tcpListen:
		case tcpEstablished:
			c.Established++
		case tcpTimeWait:
			c.TimeWait++
			if ports[lp] {
				c.TimeWaitSrv++
			}
		default:
			c.Other++
		}
	}
	return c, sc.Err()
}

func hexPort(addr string) (int, error) {
	_, p, ok := strings.Cut(addr, ":")
	if !ok {
		return 0, fmt.Errorf("no port in %q", addr)
	}
	n, err := strconv.ParseUint(p, 16, 16)
	return int(n), err
}

func countSockets(ports ...int) SockCount {
	m := map[int]bool{}
	for _, p := range ports {
		m[p] = true
	}
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return SockCount{}
	}
	defer f.Close()
	c, _ := parseProcNetTCP(f, m)
	return c
}
