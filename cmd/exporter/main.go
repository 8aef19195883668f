// Command svcprobe runs the Kubernetes "Debug Services" runbook against every Service,
// continuously, and exports per Service and per stage whether it works and which layer is broken.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	"k8s.io/klog/v2"
)

// routeKlog sends client-go's klog output (reflector warnings, leader election, throttling)
// through the exporter's slog logger, so --log.format=json gives only JSON lines and
// --log.level filters them too (klog's V levels become slog levels below info).
func routeKlog(log *slog.Logger) {
	klog.SetSlogLogger(log.With("component", "client-go"))
}

func main() {
	app := kingpin.New("svcprobe", "Runs the Kubernetes Debug Services runbook against every Service and exports which layer is broken.")
	cfg := registerFlags(app)
	webFlags := kingpinflag.AddFlags(app, ":9817")
	logCfg := &promslog.Config{}
	promslogflag.AddFlags(app, logCfg)
	app.Version(version.Print("svcprobe"))
	app.HelpFlag.Short('h')
	app.Command("serve", "Run the exporter (the default).").Default()
	diagnoseCmd := app.Command("diagnose", "Run every stage once against one Service and print the runbook walk; exit 0 when healthy, 3 when broken.")
	diagnoseKey := diagnoseCmd.Arg("service", "The Service, NAMESPACE/NAME.").Required().String()
	diagnoseFormat := diagnoseCmd.Flag("output", "Output format: text or json (the document of /api/v1/services/{ns}/{name}).").Short('o').Default("text").Enum("text", "json")
	command, err := app.Parse(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "svcprobe:", err)
		os.Exit(2)
	}
	log := promslog.New(logCfg)
	routeKlog(log)
	if err := cfg.load(); err != nil {
		log.Error("invalid configuration", "err", err)
		os.Exit(2)
	}
	cfg.apiErrors = new(atomic.Uint64)
	client, err := kubeClient(cfg.Kubeconfig, cfg.apiErrors)
	if err != nil {
		log.Error("cannot build a Kubernetes client", "err", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if command == diagnoseCmd.FullCommand() {
		code := diagnoseMain(ctx, client, cfg, *diagnoseKey, *diagnoseFormat)
		stop()
		os.Exit(code)
	}
	log.Info("starting svcprobe", "version", version.Info(), "build_context", version.BuildContext())
	if err := run(ctx, cfg, client, webFlags, log); err != nil {
		log.Error("svcprobe stopped", "err", err)
		os.Exit(1)
	}
}
