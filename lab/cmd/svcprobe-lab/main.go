// Command svcprobe-lab runs the svcprobe end-to-end lab: a real one-node
// Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
// kube-proxy, CoreDNS) in network namespaces, with a mini kubelet that runs
// Pods as processes in their own namespaces.
//
//	svcprobe-lab up       clean any previous run, start the lab, wait for http://hostnames/
//	svcprobe-lab down     stop everything and delete the namespaces
//	svcprobe-lab status   what runs
//	svcprobe-lab exec -- CMD ARGS...   run a command in the client namespace
//	svcprobe-lab deploy   run svcprobe (--exporter, default bin/svcprobe) as a Pod of the lab
//	svcprobe-lab demo     up + deploy + more Services + a loopback forward to the exporter
//	svcprobe-lab faults   list the fault catalogue
//	svcprobe-lab break FAULT / fix FAULT   inject / undo a fault
//	svcprobe-lab proxy-mode iptables|nftables   switch the running lab's kube-proxy to that mode
//	svcprobe-lab dual-stack on|off   add (remove) the Services of each ipFamilyPolicy the dual-stack faults break
//	svcprobe-lab node-local-dns on|off   point the exporter Pod at the node-local DNS cache (169.254.20.10) or back
//
// It needs root and the binaries of `make lab-tools`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/svcprobe/svcprobe/lab"
)

func usage() {
	fmt.Fprintf(os.Stderr, `usage: svcprobe-lab up|down|status [flags]
       svcprobe-lab exec [--netns NS] -- CMD ARGS...  (default: the client namespace)
       svcprobe-lab deploy|demo [--exporter bin/svcprobe] [--interval 5s]
       svcprobe-lab faults
       svcprobe-lab break|fix FAULT
       svcprobe-lab proxy-mode iptables|nftables   switch the running lab's kube-proxy to that mode
       svcprobe-lab dual-stack on|off   add (remove) hostnames-dual, hostnames-prefer, hostnames-v6
       svcprobe-lab node-local-dns on|off   the exporter Pod's nameserver: the node-local cache or the DNS Service
       svcprobe-lab metrics        print the exporter's svcprobe_service_verdict series

flags:
  --state-dir DIR   (default $SVCPROBE_LAB_STATE or /run/svcprobe-lab)
  --bin-dir DIR     (default ${SVCPROBE_CACHE:-$HOME/.cache/svcprobe}/bin)
  --proxy-addr A    API proxy on the host loopback (default 127.0.0.1:16443)
`)
	os.Exit(2)
}

func main() {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	if len(os.Args) < 2 {
		usage()
	}
	sub, rest := os.Args[1], os.Args[2:]
	if strings.HasPrefix(sub, "-") {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runSub(ctx, sub, rest); err != nil {
		fmt.Fprintf(os.Stderr, "svcprobe-lab %s: %v\n", sub, err)
		os.Exit(1)
	}
}

type portsFlag []int

func (p *portsFlag) String() string { return fmt.Sprint(*p) }
func (p *portsFlag) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return err
	}
	*p = append(*p, n)
	return nil
}

func runSub(ctx context.Context, sub string, args []string) error {
	fs := flag.NewFlagSet(sub, flag.ExitOnError)
	cfg := lab.Config{}
	fs.StringVar(&cfg.StateDir, "state-dir", "", "state directory")
	fs.StringVar(&cfg.BinDir, "bin-dir", "", "directory of the upstream binaries")
	fs.StringVar(&cfg.ProxyAddr, "proxy-addr", "", "API proxy address on the host loopback")
	fs.StringVar(&cfg.Exporter, "exporter", "", "svcprobe binary (deploy, demo; default bin/svcprobe)")
	fs.StringVar(&cfg.ExporterProxyAddr, "exporter-addr", "", "loopback forward to the exporter (demo; default 127.0.0.1:9817)")
	interval := fs.Duration("interval", 5*time.Second, "--probe.interval of the exporter (deploy, demo)")
	// Flags of the hidden subcommands.
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig (kubelet)")
	var ports portsFlag
	fs.Var(&ports, "port", "port (serve-hostname, repeatable)")
	name := fs.String("name", "", "answer (serve-hostname; default $HOSTNAME)")
	ipv4Only := fs.Bool("ipv4-only", false, "listen on IPv4 only (serve-hostname)")
	listen := fs.String("listen", "", "listen address (apiproxy)")
	netns := fs.String("netns", "", "network namespace (apiproxy, exec)")
	target := fs.String("target", "", "target address (apiproxy)")
	timeout := fs.Duration("timeout", 5*time.Second, "timeout (http-get, resolve)")
	_ = fs.Parse(args)
	cfg.Log = func(format string, a ...any) { log.Printf(format, a...) }

	switch sub {
	case "up":
		r, err := lab.Up(ctx, cfg)
		if err != nil {
			c := cfg
			if c.StateDir == "" {
				c = lab.DefaultConfig()
			}
			return fmt.Errorf("%w\n(logs in %s/logs; the lab is left as it is: run `svcprobe-lab down`)", err, c.StateDir)
		}
		fmt.Printf(`lab up in %s
  admin kubeconfig (host):  %s
  kubeconfig (in netns):    %s
  service hostnames:        %s:80
  try: %s --kubeconfig %s get pods -A
       %s exec -- curl -s http://hostnames/
       %s down
`, r.Elapsed.Round(time.Millisecond), r.AdminKubeconfig, r.ClusterKubeconfig, r.HostnamesIP,
			r.Kubectl, r.AdminKubeconfig, r.LabExe, r.LabExe)
		return nil
	case "down":
		return lab.Down(cfg)
	case "deploy":
		if err := lab.DeployExporter(ctx, cfg, lab.ExporterOptions{Interval: *interval, Timeout: min(*interval, 2*time.Second)}); err != nil {
			return err
		}
		fmt.Printf("svcprobe runs in namespace svcprobe at %s\n", lab.ExporterURL("/metrics"))
		return nil
	case "demo":
		return demo(ctx, cfg, *interval)
	case "faults":
		for _, f := range lab.Faults {
			fmt.Printf("%-18s %s\n%-18s expect: %s\n", f.Name, f.Breaks, "", f.Expect)
		}
		fmt.Println("\ndual-stack (after `svcprobe-lab dual-stack on`):")
		for _, f := range lab.DualStackFaults {
			fmt.Printf("%-18s %s\n%-18s expect: %s\n", f.Name, f.Breaks, "", f.Expect)
		}
		return nil
	case "dual-stack":
		if fs.NArg() != 1 || (fs.Arg(0) != "on" && fs.Arg(0) != "off") {
			return errors.New("dual-stack on|off")
		}
		cl, err := cfg.Client()
		if err != nil {
			return err
		}
		if fs.Arg(0) == "off" {
			return lab.DeleteDualStackServices(ctx, cl)
		}
		if err := lab.EnsureDualStackServices(ctx, cl); err != nil {
			return err
		}
		fmt.Printf("Services %s in default, with ready endpoints of each family; break one family with `svcprobe-lab break ipv6-proxy-rules-gone|aaaa-missing|ipv6-backend-v4-only`\n",
			strings.Join(lab.DualStackServices, ", "))
		return nil
	case "break", "fix":
		if fs.NArg() != 1 {
			return fmt.Errorf("%s FAULT (see `svcprobe-lab faults`)", sub)
		}
		if sub == "break" {
			if err := lab.Break(ctx, cfg, fs.Arg(0)); err != nil {
				return err
			}
			fmt.Printf("broke %s; undo with `svcprobe-lab fix %s` (make demo-fix FAULT=%s)\n", fs.Arg(0), fs.Arg(0), fs.Arg(0))
			return nil
		}
		if err := lab.Fix(ctx, cfg, fs.Arg(0)); err != nil {
			return err
		}
		fmt.Printf("fixed %s\n", fs.Arg(0))
		return nil
	case "node-local-dns":
		if fs.NArg() != 1 || (fs.Arg(0) != "on" && fs.Arg(0) != "off") {
			return errors.New("node-local-dns on|off")
		}
		c := cfg
		if err := lab.ExporterUseNodeLocalDNS(ctx, &c, fs.Arg(0) == "on"); err != nil {
			return err
		}
		if fs.Arg(0) == "on" {
			fmt.Printf("the exporter Pod's nameserver is now the node-local cache %s (its container restarted)\n", lab.NodeLocalDNSIP)
		} else {
			fmt.Printf("the exporter Pod's nameserver is the cluster DNS Service %s again\n", lab.DNSServiceIP)
		}
		return nil
	case "proxy-mode":
		if fs.NArg() != 1 {
			return errors.New("proxy-mode iptables|nftables")
		}
		c := cfg
		if err := c.SetProxyMode(ctx, fs.Arg(0)); err != nil {
			return err
		}
		fmt.Printf("kube-proxy runs in %s mode (the faults that touch proxy rules follow it)\n", c.ProxyMode())
		return nil
	case "metrics":
		body, err := lab.ScrapeExporter(ctx, "/metrics")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "svcprobe_service_verdict{") || strings.HasPrefix(l, "svcprobe_cluster_dns_up{") {
				fmt.Println(l)
			}
		}
		return nil
	case "status":
		return lab.Status(ctx, cfg, os.Stdout)
	case "exec":
		argv := fs.Args()
		if len(argv) == 0 {
			return errors.New("exec needs a command")
		}
		ns := *netns
		if ns == "" {
			ns = lab.ClientNetns
		}
		cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		return cmd.Run()

	// Hidden: run by the lab itself.
	case "kubelet":
		return lab.RunKubelet(ctx, lab.KubeletConfig{Kubeconfig: *kubeconfig, Config: cfg})
	case "apiproxy":
		return lab.APIProxy(ctx, *listen, *netns, *target)
	case "serve-hostname":
		n := *name
		if n == "" {
			n, _ = os.Hostname()
			if h := os.Getenv("HOSTNAME"); h != "" {
				n = h
			}
		}
		if len(ports) == 0 {
			ports = portsFlag{9376}
		}
		return lab.ServeHostname(ctx, n, ports, *ipv4Only)
	case "http-get":
		if fs.NArg() != 1 {
			return errors.New("http-get URL")
		}
		body, err := lab.HTTPGet(ctx, fs.Arg(0), *timeout)
		if err != nil {
			return err
		}
		fmt.Println(body)
		return nil
	case "resolve":
		if fs.NArg() != 1 {
			return errors.New("resolve NAME")
		}
		addrs, err := lab.Resolve(ctx, fs.Arg(0), *timeout)
		if err != nil {
			return err
		}
		fmt.Println(strings.Join(addrs, "\n"))
		return nil
	}
	usage()
	return nil
}

func demo(ctx context.Context, cfg lab.Config, interval time.Duration) error {
	if _, err := lab.Up(ctx, cfg); err != nil {
		return fmt.Errorf("%w\n(logs in the state dir; run `svcprobe-lab down`)", err)
	}
	if err := lab.CreateDemoServices(ctx, cfg); err != nil {
		return err
	}
	if err := lab.DeployExporter(ctx, cfg, lab.ExporterOptions{Interval: interval, Timeout: min(interval, 2*time.Second)}); err != nil {
		return err
	}
	c := cfg
	if c.ExporterProxyAddr == "" {
		c.ExporterProxyAddr = lab.DefaultConfig().ExporterProxyAddr
	}
	url := "http://" + c.ExporterProxyAddr
	if err := lab.StartExporterProxy(cfg); err != nil {
		return err
	}
	var names []string
	for _, f := range lab.Faults {
		names = append(names, f.Name)
	}
	fmt.Printf(`
svcprobe runs as a Pod of the lab (namespace svcprobe, RBAC of deploy/base, probe interval %s).
Services: default/hostnames (+ -headless, -named, -nodeport, -external), kube-system/kube-dns,
          svcprobe/svcprobe, svcprobe/svcprobe-hairpin, default/kubernetes

  status page:  %s/
  metrics:      curl -s %s/metrics | grep -E 'svcprobe_(service_verdict|cluster_dns_up)'
  verdicts:     go run ./lab/cmd/svcprobe-lab metrics
  from a Pod:   go run ./lab/cmd/svcprobe-lab exec -- curl -s http://svcprobe.svcprobe:9817/metrics
  the cluster:  go run ./lab/cmd/svcprobe-lab status

break something:  make demo-break FAULT=<name>    undo: make demo-fix FAULT=<name>
  faults: %s
  (go run ./lab/cmd/svcprobe-lab faults lists what each does and the verdict to expect)
tear down:        make demo-down
`, interval, url, url, strings.Join(names, ", "))
	return nil
}
