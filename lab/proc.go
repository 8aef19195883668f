package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// run runs a command and returns its combined output; the error carries it.
func run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// runStdin is run with stdin on the command's standard input.
func runStdin(stdin, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// ip runs the ip(8) command.
func ip(args ...string) error {
	_, err := run("ip", args...)
	return err
}

// inNetns returns the argv that runs argv inside a network namespace.
func inNetns(netns string, argv ...string) []string {
	return append([]string{"ip", "netns", "exec", netns}, argv...)
}

// startDetached starts argv in its own session with output appended to
// logFile. The returned Cmd is a child of this process: call Wait (or
// Release) on it.
func startDetached(argv []string, logFile string, env []string) (*exec.Cmd, error) {
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return nil, err
	}
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = lf
	cmd.Stderr = lf
	cmd.Stdin = nil
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", strings.Join(argv, " "), err)
	}
	return cmd, nil
}

// pidFile records the pid of a long-running component together with a word
// that must appear in its command line, so a recycled pid is never killed.
func writePidFile(path string, pid int, marker string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(fmt.Sprintf("%d %s\n", pid, marker)), 0o644)
}

func readPidFile(path string) (int, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, "", err
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 0, "", errors.New("empty pid file")
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return 0, "", err
	}
	marker := ""
	if len(f) > 1 {
		marker = f[1]
	}
	return pid, marker, nil
}

func cmdline(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
}

// alive reports whether pid runs and its command line contains marker. An
// empty command line (read while the process is in execve) counts as a match.
func alive(pid int, marker string) bool {
	if !exists(pid) {
		return false
	}
	c := cmdline(pid)
	return c == "" || marker == "" || strings.Contains(c, marker)
}

// killPids sends SIGTERM to each pid (and its process group when it leads
// one), waits up to grace, then SIGKILLs the rest.
func killPids(pids []int, grace time.Duration) {
	if len(pids) == 0 {
		return
	}
	for _, p := range pids {
		signalTree(p, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		left := false
		for _, p := range pids {
			if exists(p) {
				left = true
			}
		}
		if !left {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range pids {
		signalTree(p, syscall.SIGKILL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for _, p := range pids {
		for exists(p) && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func signalTree(pid int, sig syscall.Signal) {
	if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
		_ = syscall.Kill(-pid, sig)
	}
	_ = syscall.Kill(pid, sig)
}

// exists reports whether pid is a live (non-zombie) process.
func exists(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// state is the field after the ")" that closes comm.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

func lookPath(name string) (string, error) { return exec.LookPath(name) }

func execCommandContext(ctx context.Context, argv []string) *exec.Cmd {
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}
