package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestImage builds the image from the repository's Dockerfile without a Docker daemon (buildah,
// vfs storage, chroot isolation, as `make image` does), then checks its config (user, entrypoint,
// OCI labels) and runs the binary inside it. It builds its own binary and context in a temporary
// directory and removes the image and container it made.
func TestImage(t *testing.T) {
	buildah, err := exec.LookPath("buildah")
	if err != nil || os.Geteuid() != 0 {
		msg := fmt.Sprintf("buildah (%v) as root (euid %d) is needed: `make image-deps` installs it", err, os.Geteuid())
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if testing.Short() {
		t.Skip("-short: no image build")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	ctxDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(ctxDir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	const version = "v0.0.0-imagetest"
	run := func(timeout time.Duration, name string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run(5*time.Minute, "go", "build", "-trimpath", "-ldflags", "-s -w -X github.com/prometheus/common/version.Version="+version,
		"-o", filepath.Join(ctxDir, "bin", "svcprobe"), "./cmd/exporter")
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), df, 0o644); err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("localhost/svcprobe-imagetest:%d", os.Getpid())
	storage := []string{"--storage-driver", "vfs"}
	run(5*time.Minute, buildah, append(storage, "bud", "--isolation", "chroot", "--build-arg", "VERSION="+version, "-t", tag, ctxDir)...)
	t.Cleanup(func() { _ = exec.Command(buildah, append(storage, "rmi", "-f", tag)...).Run() })

	var img struct {
		OCIv1 struct {
			Config struct {
				User       string            `json:"User"`
				Entrypoint []string          `json:"Entrypoint"`
				Labels     map[string]string `json:"Labels"`
				Exposed    map[string]any    `json:"ExposedPorts"`
			} `json:"config"`
		} `json:"OCIv1"`
	}
	if err := json.Unmarshal([]byte(run(time.Minute, buildah, append(storage, "inspect", "--type", "image", tag)...)), &img); err != nil {
		t.Fatal(err)
	}
	c := img.OCIv1.Config
	if c.User != "65534:65534" {
		t.Errorf("image user %q, want 65534:65534 (non-root)", c.User)
	}
	if strings.Join(c.Entrypoint, " ") != "/bin/svcprobe" {
		t.Errorf("entrypoint %q", c.Entrypoint)
	}
	if c.Labels["org.opencontainers.image.version"] != version || c.Labels["org.opencontainers.image.source"] == "" {
		t.Errorf("OCI labels %v", c.Labels)
	}
	if _, ok := c.Exposed["9817/tcp"]; !ok {
		t.Errorf("exposed ports %v, want 9817/tcp", c.Exposed)
	}

	// The binary inside runs (static, no libc on scratch) and is the version built.
	ctr := strings.TrimSpace(run(time.Minute, buildah, append(storage, "from", "--name", fmt.Sprintf("svcprobe-imagetest-%d", os.Getpid()), tag)...))
	t.Cleanup(func() { _ = exec.Command(buildah, append(storage, "rm", ctr)...).Run() })
	out := run(time.Minute, buildah, append(storage, "run", "--isolation", "chroot", ctr, "--", "/bin/svcprobe", "--version")...)
	if !strings.Contains(out, version) {
		t.Fatalf("svcprobe --version in the image printed %q, want %s", out, version)
	}
	// The image holds nothing but the binary: a scratch base with no shell.
	if _, err := exec.Command(buildah, append(storage, "run", "--isolation", "chroot", ctr, "--", "/bin/sh", "-c", "true")...).CombinedOutput(); err == nil {
		t.Error("the image has a shell; it should be FROM scratch with the binary only")
	}
}
