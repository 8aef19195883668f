package lab

// API outages for the lab: stop and start kube-apiserver and etcd with the
// command lines they run with, change etcd behind the apiserver's back, and
// cut only the exporter Pod off the API (a partition) with iptables rules that
// carry a comment, so that healing removes exactly them.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PartitionComment tags the iptables rules of PartitionExporter.
const PartitionComment = "svcprobe-lab-partition-exporter"

// argvPath keeps a component's command line from before the first stop, so it
// can be started again the same way (Down removes it with the pid files).
func (c *Config) argvPath(name string) string { return c.path("pids", name+".argv") }

// componentArgv returns the command line a component was started with: the
// one saved at its first stop, else the running process's.
func (c *Config) componentArgv(name string) ([]string, error) {
	if b, err := os.ReadFile(c.argvPath(name)); err == nil {
		return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00"), nil
	}
	pid, marker, err := readPidFile(c.pidPath(name))
	if err != nil {
		return nil, fmt.Errorf("%s: no pid file: %w", name, err)
	}
	if !alive(pid, marker) {
		return nil, fmt.Errorf("%s (pid %d) is not running and its command line was not saved", name, pid)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("%s: command line of pid %d: %v", name, pid, err)
	}
	if err := os.WriteFile(c.argvPath(name), b, 0o600); err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00"), nil
}

// StopComponent stops etcd or kube-apiserver (SIGTERM, SIGKILL after 15 s)
// after saving its command line for StartComponent.
func (c *Config) StopComponent(name string) error {
	c.fill()
	if _, err := c.componentArgv(name); err != nil {
		return err
	}
	pid, marker, err := readPidFile(c.pidPath(name))
	if err != nil {
		return err
	}
	if alive(pid, marker) {
		c.Log("stopping %s (pid %d)", name, pid)
		killPids([]int{pid}, 15*time.Second)
	}
	if exists(pid) {
		return fmt.Errorf("%s (pid %d) did not stop", name, pid)
	}
	return nil
}

// StartComponent starts a component stopped by StopComponent with its saved
// command line plus extra flags, and waits until it serves (etcd /health,
// kube-apiserver /readyz).
func (c *Config) StartComponent(ctx context.Context, name string, extra ...string) error {
	c.fill()
	if err := c.componentAlive(name); err == nil {
		return fmt.Errorf("%s is already running", name)
	}
	argv, err := c.componentArgv(name)
	if err != nil {
		return err
	}
	if err := c.startComponent(name, argv[0], append(slices.Clone(argv[1:]), extra...)...); err != nil {
		return err
	}
	return c.waitServing(ctx, name)
}

// RestartComponent stops a component and starts it again (plus extra flags).
func (c *Config) RestartComponent(ctx context.Context, name string, extra ...string) error {
	if err := c.StopComponent(name); err != nil {
		return err
	}
	return c.StartComponent(ctx, name, extra...)
}

// EnsureControlPlane leaves etcd and kube-apiserver running with the command
// lines Up gave them: it starts what is stopped and restarts what runs with
// other flags. For cleanups after an outage test.
func (c *Config) EnsureControlPlane(ctx context.Context) error {
	c.fill()
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if err := c.componentAlive(name); err == nil {
			want, err := c.componentArgv(name)
			if err != nil {
				return err
			}
			pid, _, _ := readPidFile(c.pidPath(name))
			if got := strings.Fields(cmdline(pid)); slices.Equal(got, want) {
				if err := c.waitServing(ctx, name); err != nil {
					return err
				}
				continue
			}
			if err := c.StopComponent(name); err != nil {
				return err
			}
		}
		if err := c.StartComponent(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) waitServing(ctx context.Context, name string) error {
	var check func() error
	switch name {
	case "etcd":
		check = func() error {
			var h struct {
				Health string `json:"health"`
			}
			if err := c.etcdCall(ctx, http.MethodGet, "/health", nil, &h); err != nil {
				return err
			}
			if h.Health != "true" {
				return fmt.Errorf("etcd /health: %q", h.Health)
			}
			return nil
		}
	case "kube-apiserver":
		cl, err := c.Client()
		if err != nil {
			return err
		}
		check = func() error {
			_, err := cl.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
			return err
		}
	default:
		return nil
	}
	return waitFor(ctx, 90*time.Second, name+" serving", func() error {
		if err := c.componentAlive(name); err != nil {
			return backoff.Permanent(c.withLog(name, err))
		}
		return check()
	})
}

// --- etcd behind the apiserver's back ------------------------------------

var etcdHTTP = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
	DialContext: NetnsDialer(NodeNetns), DisableKeepAlives: true}}

// etcdCall talks to etcd's JSON gateway (http://127.0.0.1:2379 in the node
// namespace).
func (c *Config) etcdCall(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://127.0.0.1:2379"+path, body)
	if err != nil {
		return err
	}
	resp, err := etcdHTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd %s: %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

type etcdHeader struct {
	Revision string `json:"revision"`
}

// EtcdDeleteService deletes a Service's key from etcd directly, as if it had
// been deleted while nobody watched: no watch event carries it, only a list
// shows it is gone. It returns etcd's revision after the delete.
func (c *Config) EtcdDeleteService(ctx context.Context, namespace, name string) (int64, error) {
	key := "/registry/services/specs/" + namespace + "/" + name
	var out struct {
		Header  etcdHeader `json:"header"`
		Deleted string     `json:"deleted"`
	}
	if err := c.etcdCall(ctx, http.MethodPost, "/v3/kv/deleterange",
		map[string]string{"key": base64.StdEncoding.EncodeToString([]byte(key))}, &out); err != nil {
		return 0, err
	}
	if out.Deleted != "1" {
		return 0, fmt.Errorf("etcd delete %s: deleted %q keys", key, out.Deleted)
	}
	return strconv.ParseInt(out.Header.Revision, 10, 64)
}

// EtcdCompact compacts etcd's history up to rev: a watch from an older
// revision can no longer be served ("too old resource version").
func (c *Config) EtcdCompact(ctx context.Context, rev int64) error {
	return c.etcdCall(ctx, http.MethodPost, "/v3/kv/compaction",
		map[string]any{"revision": strconv.FormatInt(rev, 10), "physical": true}, nil)
}

// --- partition -----------------------------------------------------------

// PartitionExporter cuts the exporter Pod off the apiserver and nothing
// else: in the node namespace, its packets to the apiserver's port are
// answered "host unreachable" (a new connection fails at once, as behind a
// router that lost the route) and the apiserver's packets to it are dropped
// (nothing more arrives on an open watch). Its open connections to the API
// are aborted (ss -K in its Pod's namespace), as a middlebox that lost its
// state would; without that, client-go's HTTP/2 health check notices a
// silent partition only after 30 s + 15 s. Its probes of every other address
// keep working. HealPartition undoes it.
func (c *Config) PartitionExporter(ctx context.Context) error {
	c.fill()
	pod, err := c.ExporterPod(ctx)
	if err != nil {
		return err
	}
	port := strconv.Itoa(APIServerPort)
	tag := []string{"-m", "comment", "--comment", PartitionComment}
	rules := [][]string{
		append(append([]string{"INPUT", "-s", ExporterIP, "-p", "tcp", "--dport", port}, tag...), "-j", "REJECT", "--reject-with", "icmp-host-unreachable"),
		append(append([]string{"OUTPUT", "-d", ExporterIP, "-p", "tcp", "--sport", port}, tag...), "-j", "DROP"),
	}
	for _, r := range rules {
		args := append([]string{"netns", "exec", NodeNetns, "iptables", "-w", "-I", r[0], "1"}, r[1:]...)
		if _, err := run("ip", args...); err != nil {
			return errors.Join(err, c.HealPartition())
		}
	}
	// Abort the exporter's connections to the API: to the kubernetes
	// Service's VIP and, should a kubeconfig name it, to the apiserver.
	cl, err := c.Client()
	if err != nil {
		return errors.Join(err, c.HealPartition())
	}
	svc, err := cl.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		return errors.Join(err, c.HealPartition())
	}
	for _, dst := range [][2]string{{svc.Spec.ClusterIP, "443"}, {NodeIP, port}} {
		if _, err := run("ip", "netns", "exec", PodNetns(pod.Namespace, pod.Name),
			"ss", "-K", "-t", "dst", dst[0], "dport", "=", dst[1]); err != nil {
			return errors.Join(err, c.HealPartition())
		}
	}
	return nil
}

// HealPartition removes every rule tagged PartitionComment from the node
// namespace's filter table (and nothing else).
func (c *Config) HealPartition() error {
	return removeTaggedRules(NodeNetns, PartitionComment)
}

// PartitionRules lists the rules tagged PartitionComment (iptables -S form).
func PartitionRules() ([]string, error) {
	return taggedRules(NodeNetns, PartitionComment)
}

func taggedRules(netns, comment string) ([]string, error) {
	return taggedRulesIn(netns, "filter", comment)
}

// taggedRulesIn lists the rules of an iptables table in netns that carry the comment (-S form).
func taggedRulesIn(netns, table, comment string) ([]string, error) {
	out, err := run("ip", "netns", "exec", netns, "iptables", "-w", "-t", table, "-S")
	if err != nil {
		return nil, err
	}
	var rules []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[0] == "-A" && slices.Contains(f, comment) {
			rules = append(rules, line)
		}
	}
	return rules, nil
}

func removeTaggedRules(netns, comment string) error {
	return removeTaggedRulesIn(netns, "filter", comment)
}

// removeTaggedRulesIn deletes every rule of the table in netns that carries the comment, then
// checks that none is left.
func removeTaggedRulesIn(netns, table, comment string) error {
	rules, err := taggedRulesIn(netns, table, comment)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range rules {
		f := strings.Fields(r)
		f[0] = "-D"
		if _, err := run("ip", append([]string{"netns", "exec", netns, "iptables", "-w", "-t", table}, f...)...); err != nil {
			errs = append(errs, err)
		}
	}
	if left, err := taggedRulesIn(netns, table, comment); err != nil || len(left) > 0 {
		errs = append(errs, fmt.Errorf("rules tagged %s left in %s table %s: %v %v", comment, netns, table, left, err))
	}
	return errors.Join(errs...)
}

// ExporterPID returns the pid of the exporter's process in its Pod's
// network namespace (exactly one is expected).
func (c *Config) ExporterPID(ctx context.Context) (int, error) {
	pod, err := c.ExporterPod(ctx)
	if err != nil {
		return 0, err
	}
	return podPID(PodNetns(pod.Namespace, pod.Name))
}

func podPID(netns string) (int, error) {
	pids := netnsPids(netns)
	if len(pids) != 1 {
		return 0, fmt.Errorf("want one process in netns %s, found %v", netns, pids)
	}
	return pids[0], nil
}
