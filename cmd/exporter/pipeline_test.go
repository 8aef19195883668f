package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"reflect"
	"testing"

	"github.com/alecthomas/kingpin/v2"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/svcprobe/svcprobe/pipeline"
	"github.com/svcprobe/svcprobe/probe"
)

// The exporter started without flags builds pipeline.Defaults(), and newExporter (what run
// serves) is pipeline.New over it: the configuration the bench starts from (bench's
// TestBenchBuildsTheExporterPipeline) is the one that ships, and so is the wiring.
func TestFlagDefaultsArePipelineDefaults(t *testing.T) {
	for _, env := range []string{"POD_NAME", "POD_IP", "NODE_NAME", "HOST_IP"} {
		t.Setenv(env, "") // restored after the test
		os.Unsetenv(env)
	}
	app := kingpin.New("svcprobe", "")
	cfg := registerFlags(app)
	if _, err := app.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := cfg.load(); err != nil {
		t.Fatalf("the defaults do not validate: %v", err)
	}
	got, want := cfg.pipelineConfig(probe.ResolvConf{}), pipeline.Defaults()
	if !reflect.DeepEqual(got, want) {
		gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
		for i := range gv.NumField() {
			if !reflect.DeepEqual(gv.Field(i).Interface(), wv.Field(i).Interface()) {
				t.Errorf("%s: the flags give %#v, pipeline.Defaults() %#v", gv.Type().Field(i).Name, gv.Field(i).Interface(), wv.Field(i).Interface())
			}
		}
	}

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.ResolvConf = testConfig(t).ResolvConf
	e, err := newExporter(cfg, fake.NewClientset(), log)
	if err != nil {
		t.Fatal(err)
	}
	defer stopPipeline(e)
	rc, err := readResolvConf(cfg.ResolvConf)
	if err != nil {
		t.Fatal(err)
	}
	want.ResolvConf = rc
	d, err := pipeline.New(want, fake.NewClientset(), log)
	if err != nil {
		t.Fatal(err)
	}
	defer stopPipeline(d)
	if !reflect.DeepEqual(e.Config, d.Config) || !reflect.DeepEqual(e.Wiring(), d.Wiring()) {
		t.Fatalf("newExporter without flags:\n%+v\n%+v\npipeline.New(pipeline.Defaults()):\n%+v\n%+v", e.Config, e.Wiring(), d.Config, d.Wiring())
	}
}

// stopPipeline releases a pipeline that was built and never run (its watcher's queue).
func stopPipeline(p *pipeline.Pipeline) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = p.Run(ctx)
}
