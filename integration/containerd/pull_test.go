//go:build integration

package containerd

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/caddy-spawn/caddy-spawn/internal/imagebuild"
	"github.com/caddy-spawn/caddy-spawn/snapshots"
	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// testRegistry is go-containerregistry's in-process registry on loopback,
// optionally behind HTTP basic auth.
type testRegistry struct {
	host       string // 127.0.0.1:<port>
	user, pass string
}

func startRegistry(t *testing.T, user, pass string) *testRegistry {
	t.Helper()
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if user != "" {
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u, p, ok := r.BasicAuth()
			if !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="caddy-spawn-test"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
			inner.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &testRegistry{host: strings.TrimPrefix(srv.URL, "http://"), user: user, pass: pass}
}

// push builds a version of the test function — testfn.tar plus a layer
// holding /version and FN_VERSION=<version> in its environment — and pushes
// it to the registry as repo:tag. It returns the reference and the digest.
func (r *testRegistry) push(t *testing.T, repo, tag, version string) (string, string) {
	t.Helper()
	base, err := tarball.ImageFromPath(filepath.Join(env.imagesDir, "testfn.tar"), nil)
	if err != nil {
		t.Fatalf("reading testfn.tar: %v", err)
	}
	extra, err := imagebuild.Build(imagebuild.Spec{
		Ref:    "localhost/extra:" + version,
		Layers: [][]imagebuild.File{{{Path: "/version", Mode: 0o644, Data: []byte(version + "\n")}}},
	})
	if err != nil {
		t.Fatalf("building version layer: %v", err)
	}
	layers, err := extra.Layers()
	if err != nil {
		t.Fatalf("version layer: %v", err)
	}
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		t.Fatalf("appending version layer: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	cfg := cf.Config
	cfg.Env = append(append([]string(nil), cfg.Env...), "FN_VERSION="+version)
	img, err = mutate.Config(img, cfg)
	if err != nil {
		t.Fatalf("setting env: %v", err)
	}
	ref := r.host + "/caddy-spawn/" + repo + ":" + tag
	tagRef, err := name.NewTag(ref, name.Insecure) // plain HTTP, loopback or not
	if err != nil {
		t.Fatalf("parsing %s: %v", ref, err)
	}
	opts := []remote.Option{remote.WithContext(t.Context())}
	if r.user != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: r.user, Password: r.pass}))
	}
	if err := remote.Write(tagRef, img, opts...); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	dg, err := img.Digest()
	if err != nil {
		t.Fatalf("digest: %v", err)
	}
	return ref, dg.String()
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// pulledFn runs ready's image in "env" mode.
func pulledFn(t *testing.T, ready *snapshots.Ready) *spawner.Function {
	fn := testfn(t, "env")
	fn.Image = ready
	return fn
}

// serveVersion serves one request from ready and returns FN_VERSION.
func serveVersion(t *testing.T, s *spawner.Spawner, ready *snapshots.Ready) string {
	t.Helper()
	inst := create(t, s, pulledFn(t, ready))
	res := serve(t, inst, []string{"REQUEST_METHOD=GET"}, nil)
	if res.status.Code != 0 {
		t.Fatalf("exit code = %d, stderr %q", res.status.Code, res.stderr)
	}
	for l := range strings.SplitSeq(string(res.stdout), "\n") {
		if v, ok := strings.CutPrefix(l, "FN_VERSION="); ok {
			return v
		}
	}
	t.Fatalf("no FN_VERSION in output %q", res.stdout)
	return ""
}

func TestPull(t *testing.T) {
	ctx := nsCtx(t)
	s := newSpawner(t, "")

	t.Run("multi-layer image pulled, unpacked and served", func(t *testing.T) {
		reg := startRegistry(t, "", "")
		ref, digest := reg.push(t, "open", "latest", "v1")
		start := time.Now()
		ready, err := snapshots.Ensure(ctx, env.client, env.ns, snapshots.Source{
			Ref: ref, Snapshotter: snapshotter,
		}, zaptest.NewLogger(t))
		if err != nil {
			t.Fatalf("Ensure(%s): %v", ref, err)
		}
		t.Logf("pull+unpack of %s took %v", ref, time.Since(start))
		if ready.Digest != digest {
			t.Errorf("pinned %s, registry has %s", ready.Digest, digest)
		}
		diffs, err := ready.Image.RootFS(ctx)
		if err != nil || len(diffs) < 2 {
			t.Errorf("RootFS = %d layers, %v; want a multi-layer image", len(diffs), err)
		}
		ok, err := ready.Image.IsUnpacked(ctx, snapshotter)
		if err != nil || !ok {
			t.Errorf("IsUnpacked = %v, %v; want true", ok, err)
		}
		if l := ready.Image.Labels()[snapshots.LabelManaged]; l != "true" {
			t.Errorf("pulled image label %s = %q, want true", snapshots.LabelManaged, l)
		}
		if v := serveVersion(t, s, ready); v != "v1" {
			t.Errorf("served FN_VERSION %q, want v1", v)
		}
	})

	t.Run("basic auth", func(t *testing.T) {
		reg := startRegistry(t, "spawn", "s3cret")
		ref, digest := reg.push(t, "private", "latest", "v1")
		ready, err := snapshots.Ensure(ctx, env.client, env.ns, snapshots.Source{
			Ref: ref, Snapshotter: snapshotter,
			Auth: &snapshots.Auth{Username: "spawn", Password: "s3cret"},
		}, zaptest.NewLogger(t))
		if err != nil {
			t.Fatalf("Ensure(%s) with credentials: %v", ref, err)
		}
		if ready.Digest != digest {
			t.Errorf("pinned %s, registry has %s", ready.Digest, digest)
		}
		if v := serveVersion(t, s, ready); v != "v1" {
			t.Errorf("served FN_VERSION %q, want v1", v)
		}
	})

	t.Run("wrong credentials", func(t *testing.T) {
		reg := startRegistry(t, "spawn", "s3cret")
		ref, _ := reg.push(t, "private-refused", "latest", "v1")
		for _, auth := range []*snapshots.Auth{{Username: "spawn", Password: "not-the-password"}, nil} {
			_, err := snapshots.Ensure(ctx, env.client, env.ns, snapshots.Source{
				Ref: ref, Snapshotter: snapshotter, Auth: auth,
			}, zaptest.NewLogger(t))
			if !errors.Is(err, snapshots.ErrUnauthorized) {
				t.Fatalf("Ensure(%s) with auth %v: err = %v, want ErrUnauthorized", ref, auth != nil, err)
			}
			if errors.Is(err, snapshots.ErrImageNotFound) {
				t.Errorf("error %q also reads as not found", err)
			}
			if !strings.Contains(err.Error(), ref) || !strings.Contains(err.Error(), reg.host) {
				t.Errorf("error %q does not name the ref and the registry", err)
			}
			if strings.Contains(err.Error(), "not-the-password") || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q shows a password", err)
			}
			t.Logf("wrong credentials (auth set: %v): %v", auth != nil, err)
		}
	})

	t.Run("credentials from a docker config", func(t *testing.T) {
		reg := startRegistry(t, "spawn", "s3cret")
		ref, _ := reg.push(t, "private-config", "latest", "v1")
		path := filepath.Join(t.TempDir(), "config.json")
		writeFile(t, path, `{"auths":{"http://`+reg.host+`":{"auth":"c3Bhd246czNjcmV0"}}}`) // spawn:s3cret
		creds, err := snapshots.LoadDockerConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := snapshots.Ensure(ctx, env.client, env.ns, snapshots.Source{
			Ref: ref, Snapshotter: snapshotter, Registries: snapshots.Registries{Credentials: creds},
		}, zaptest.NewLogger(t)); err != nil {
			t.Fatalf("Ensure(%s) with registry config: %v", ref, err)
		}
	})

	t.Run("mirror from a hosts directory", func(t *testing.T) {
		reg := startRegistry(t, "", "")
		// The image is pushed to the loopback registry but named after a
		// registry that does not exist: only the hosts.toml can find it.
		loopRef, digest := reg.push(t, "mirrored", "latest", "v1")
		ref := "registry.invalid/caddy-spawn/mirrored:latest"
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "registry.invalid"), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "registry.invalid", "hosts.toml"),
			"server = \"https://registry.invalid\"\n\n[host.\"http://"+reg.host+"\"]\n  capabilities = [\"pull\", \"resolve\"]\n")
		ready, err := snapshots.Ensure(ctx, env.client, env.ns, snapshots.Source{
			Ref: ref, Snapshotter: snapshotter, Registries: snapshots.Registries{HostsDir: dir},
		}, zaptest.NewLogger(t))
		if err != nil {
			t.Fatalf("Ensure(%s) through the mirror %s: %v", ref, loopRef, err)
		}
		if ready.Digest != digest {
			t.Errorf("pinned %s, mirror has %s", ready.Digest, digest)
		}
		if v := serveVersion(t, s, ready); v != "v1" {
			t.Errorf("served FN_VERSION %q, want v1", v)
		}
	})

	// insecure_registries for a registry off loopback is covered by the
	// plainHTTP unit table in snapshots: a test registry here may only
	// listen on loopback (this workplace's tests never send traffic to
	// another address, not even the host's own), and loopback registries
	// are plain HTTP anyway.

	t.Run("transient registry failures are retried", func(t *testing.T) {
		inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
		var failures atomic.Int32
		failures.Store(2)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/manifests/") && r.Method == http.MethodHead && failures.Add(-1) >= 0 {
				http.Error(w, "try again", http.StatusServiceUnavailable)
				return
			}
			inner.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		reg := &testRegistry{host: strings.TrimPrefix(srv.URL, "http://")}
		failures.Store(0)
		ref, digest := reg.push(t, "flaky", "latest", "v1")
		failures.Store(2)
		core, logs := observer.New(zap.InfoLevel)
		ready, err := snapshots.Ensure(ctx, env.client, env.ns, snapshots.Source{
			Ref: ref, Snapshotter: snapshotter,
		}, zap.New(core))
		if err != nil {
			t.Fatalf("Ensure(%s) with two 503s first: %v", ref, err)
		}
		if ready.Digest != digest {
			t.Errorf("pinned %s, registry has %s", ready.Digest, digest)
		}
		if n := logs.FilterMessage("pull failed; retrying").Len(); n < 1 {
			t.Errorf("%d \"pull failed; retrying\" log entries, want at least 1", n)
		}

		// A refusal is not retried.
		failures.Store(0)
		authReg := startRegistry(t, "spawn", "s3cret")
		authRef, _ := authReg.push(t, "flaky-auth", "latest", "v1")
		core, logs = observer.New(zap.InfoLevel)
		if _, err := snapshots.Ensure(ctx, env.client, env.ns, snapshots.Source{
			Ref: authRef, Snapshotter: snapshotter,
		}, zap.New(core)); !errors.Is(err, snapshots.ErrUnauthorized) {
			t.Fatalf("Ensure(%s) without credentials: err = %v, want ErrUnauthorized", authRef, err)
		}
		if n := logs.FilterMessage("pull failed; retrying").Len(); n != 0 {
			t.Errorf("a refusal was retried %d times", n)
		}
	})

	t.Run("not in the registry", func(t *testing.T) {
		reg := startRegistry(t, "", "")
		reg.push(t, "present", "latest", "v1")
		ref := reg.host + "/caddy-spawn/absent:latest"
		_, err := snapshots.Ensure(ctx, env.client, env.ns, snapshots.Source{
			Ref: ref, Snapshotter: snapshotter,
		}, zaptest.NewLogger(t))
		if !errors.Is(err, snapshots.ErrImageNotFound) || errors.Is(err, snapshots.ErrUnauthorized) {
			t.Fatalf("Ensure(%s) err = %v, want ErrImageNotFound only", ref, err)
		}
		if !strings.Contains(err.Error(), reg.host) {
			t.Errorf("error %q does not name the registry", err)
		}
		t.Logf("not found: %v", err)
	})

	t.Run("pull_policy never with a missing image", func(t *testing.T) {
		reg := startRegistry(t, "", "")
		ref, _ := reg.push(t, "never", "latest", "v1")
		_, err := snapshots.Ensure(ctx, env.client, env.ns, snapshots.Source{
			Ref: ref, Snapshotter: snapshotter, Pull: snapshots.PullNever,
		}, zaptest.NewLogger(t))
		if !errors.Is(err, snapshots.ErrImageNotFound) {
			t.Fatalf("Ensure(%s, never) err = %v, want ErrImageNotFound", ref, err)
		}
		if !strings.Contains(err.Error(), ref) || !strings.Contains(err.Error(), "never") {
			t.Errorf("error %q does not name the ref and the policy", err)
		}
		if _, err := env.client.GetImage(ctx, ref); err == nil {
			t.Errorf("pull_policy never pulled %s", ref)
		}
	})

	t.Run("moved tag: pinned until Ensure with always", func(t *testing.T) {
		reg := startRegistry(t, "", "")
		ref, d1 := reg.push(t, "moving", "latest", "v1")
		logger := zaptest.NewLogger(t)
		first, err := snapshots.Ensure(ctx, env.client, env.ns, snapshots.Source{
			Ref: ref, Snapshotter: snapshotter, Pull: snapshots.PullAlways,
		}, logger)
		if err != nil {
			t.Fatalf("Ensure(%s): %v", ref, err)
		}
		_, d2 := reg.push(t, "moving", "latest", "v2")
		if d1 == d2 {
			t.Fatal("v1 and v2 have the same digest")
		}
		if first.Digest != d1 {
			t.Fatalf("pinned %s, want %s", first.Digest, d1)
		}
		if v := serveVersion(t, s, first); v != "v1" {
			t.Errorf("pinned image served FN_VERSION %q after the tag moved, want v1", v)
		}
		// missing: the namespace has the image, so no pull and no change.
		same, err := snapshots.Ensure(ctx, env.client, env.ns, snapshots.Source{
			Ref: ref, Snapshotter: snapshotter,
		}, logger)
		if err != nil {
			t.Fatalf("Ensure(%s, missing): %v", ref, err)
		}
		if same.Digest != d1 {
			t.Errorf("Ensure with pull_policy missing pinned %s, want %s (no pull)", same.Digest, d1)
		}
		// always, as at a config reload: the new digest.
		second, err := snapshots.Ensure(ctx, env.client, env.ns, snapshots.Source{
			Ref: ref, Snapshotter: snapshotter, Pull: snapshots.PullAlways,
		}, logger)
		if err != nil {
			t.Fatalf("Ensure(%s, always) after the move: %v", ref, err)
		}
		if second.Digest != d2 {
			t.Errorf("Ensure with pull_policy always pinned %s, want the moved tag's %s", second.Digest, d2)
		}
		if v := serveVersion(t, s, second); v != "v2" {
			t.Errorf("re-pulled image served FN_VERSION %q, want v2", v)
		}
	})
}

// TestPullTimes measures what the README's note reports: pull+unpack of
// each example image from a loopback registry (as snapshots.Ensure logs
// it), and the per-request rootfs prepare (NewContainer with
// WithNewSnapshot, then delete), the part of a cold start that depends on
// the image. Content already in the store (the suite imports testfn) is not
// fetched again, so the numbers are unpack-dominated.
func TestPullTimes(t *testing.T) {
	ctx := nsCtx(t)
	reg := startRegistry(t, "", "")
	for _, img := range []string{"hello", "shell", "testfn"} {
		t.Run(img, func(t *testing.T) {
			base, err := tarball.ImageFromPath(filepath.Join(env.imagesDir, img+".tar"), nil)
			if err != nil {
				t.Fatal(err)
			}
			ref := reg.host + "/caddy-spawn/" + img + "-timed:latest"
			tag, err := name.NewTag(ref)
			if err != nil {
				t.Fatal(err)
			}
			if err := remote.Write(tag, base, remote.WithContext(ctx)); err != nil {
				t.Fatalf("pushing %s: %v", ref, err)
			}
			ready, err := snapshots.Ensure(ctx, env.client, env.ns, snapshots.Source{
				Ref: ref, Snapshotter: snapshotter, Pull: snapshots.PullAlways,
			}, zaptest.NewLogger(t))
			if err != nil {
				t.Fatalf("Ensure(%s): %v", ref, err)
			}
			size, _ := ready.Image.Size(ctx)
			const n = 20
			var total, worst time.Duration
			for i := range n {
				id := fnName(t) + "-" + randHex(8)
				start := time.Now()
				c, err := env.client.NewContainer(ctx, id, client.WithNewSnapshot(id+"-rootfs", ready.Image),
					client.WithNewSpec(oci.WithImageConfig(ready.Image)))
				took := time.Since(start)
				if err != nil {
					t.Fatalf("NewContainer %d: %v", i, err)
				}
				if err := c.Delete(context.WithoutCancel(ctx), client.WithSnapshotCleanup); err != nil {
					t.Fatalf("deleting %s: %v", id, err)
				}
				total += took
				worst = max(worst, took)
			}
			t.Logf("MEASURE %s: %d bytes; Ensure (pull+unpack) %v; NewContainer+WithNewSnapshot mean %v, max %v over %d",
				img, size, ready.Took, total/n, worst, n)
		})
	}
}
