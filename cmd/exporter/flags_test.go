package main

import (
	"os"
	"testing"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// The args shipped in deploy/base must be flags this binary accepts: the manifests and the code
// cannot drift apart.
func TestDeployArgsAreValidFlags(t *testing.T) {
	b, err := os.ReadFile("../../deploy/base/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := yaml.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	app := kingpin.New("svcprobe", "")
	cfg := registerFlags(app)
	kingpinflag.AddFlags(app, ":9817")
	args := d.Spec.Template.Spec.Containers[0].Args
	if _, err := app.Parse(args); err != nil {
		t.Fatalf("deploy/base args %v: %v", args, err)
	}
	cfg.HairpinIdentity = "svcprobe-abc" // from POD_NAME in the Pod
	cfg.ResolvConf = "/etc/resolv.conf"
	if err := cfg.load(); err != nil {
		t.Fatalf("deploy/base args do not validate: %v", err)
	}
}
