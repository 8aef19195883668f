package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"github.com/svcprobe/svcprobe/pipeline"
	"github.com/svcprobe/svcprobe/probe"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
)

// newExporter reads the resolv.conf and wires the pipeline (pipeline.New, the one assembly the
// bench measures too) from the flags. It starts nothing.
func newExporter(cfg *config, client kubernetes.Interface, log *slog.Logger) (*pipeline.Pipeline, error) {
	rc, err := readResolvConf(cfg.ResolvConf)
	if err != nil {
		return nil, err
	}
	return pipeline.New(cfg.pipelineConfig(rc), client, log)
}

func readResolvConf(path string) (probe.ResolvConf, error) {
	f, err := os.Open(path)
	if err != nil {
		return probe.ResolvConf{}, fmt.Errorf("--dns.resolv-conf: %w", err)
	}
	defer f.Close()
	rc, err := probe.ParseResolvConf(f)
	if err != nil {
		return probe.ResolvConf{}, fmt.Errorf("--dns.resolv-conf %s: %w", path, err)
	}
	return rc, nil
}

// run serves until ctx ends, then stops everything within a second.
func run(ctx context.Context, cfg *config, client kubernetes.Interface, webFlags *web.FlagConfig, log *slog.Logger) error {
	p, err := newExporter(cfg, client, log)
	if err != nil {
		return err
	}
	return serve(ctx, p, webFlags, log)
}

func serve(ctx context.Context, p *pipeline.Pipeline, webFlags *web.FlagConfig, log *slog.Logger) error {
	srv := &http.Server{Handler: p.Handler, ReadHeaderTimeout: 10 * time.Second}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.Run(gctx) })
	g.Go(func() error {
		err := web.ListenAndServe(srv, webFlags, log)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("web server: %w", err)
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	err := g.Wait()
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
