//go:build integration

// Package containerd holds the integration tests of spawner and snapshots
// against a real containerd and runc. They need root and the test images
// built by `make images` (SPAWN_IMAGES); without them they fail, never skip:
// the build tag is the opt-in.
//
// By default TestMain starts a private containerd (spawner.StartDaemon) with
// its root in a temporary directory; -address points the tests at a running
// one instead. Either way everything happens in a throw-away namespace
// caddy-spawn-test-<rand>, which is checked for leftovers and removed at the
// end.
package containerd

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	ctrsnapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/caddy-spawn/caddy-spawn/internal/hostprobe"
	spawnsnapshots "github.com/caddy-spawn/caddy-spawn/snapshots"
	"github.com/caddy-spawn/caddy-spawn/spawner"
	"github.com/caddy-spawn/caddy-spawn/spawner/initbin"
)

var address = flag.String("address", "", "containerd socket to test against; empty starts a private containerd")

const (
	// snapshotter is the one the tests unpack into and walk.
	snapshotter = "overlayfs"
	// testfnRef is the multi-mode test function (testdata/functions/testfn).
	testfnRef = "localhost/caddy-spawn/testfn:latest"
	helloRef  = "localhost/caddy-spawn/hello:latest"
	// managedFilter selects everything carrying our managed label.
	managedFilter = `labels."` + spawner.LabelManaged + `"==true`
)

// env is the suite's shared state, set up once by TestMain.
var env struct {
	client    *client.Client
	ns        string
	owner     string
	initPath  string
	fifoDir   string
	imagesDir string
	testfn    *spawnsnapshots.Ready
	fastPath  *spawner.FastPath // nil: the stock runc shim
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

// fatalf reports why the suite cannot run. It never skips: the integration
// tag is the opt-in, so a missing prerequisite is a failure.
func fatalf(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "FAIL integration/containerd: "+format+"\n", args...)
	return 1
}

func run(m *testing.M) (code int) {
	if os.Geteuid() != 0 {
		return fatalf("these tests run containers and need root (run them as root, e.g. via `make integration`)")
	}
	env.imagesDir = os.Getenv("SPAWN_IMAGES")
	if env.imagesDir == "" {
		return fatalf("SPAWN_IMAGES is not set; build the test images with `make images` and set SPAWN_IMAGES=build/images")
	}
	if _, err := os.Stat(filepath.Join(env.imagesDir, "testfn.tar")); err != nil {
		return fatalf("test image archive missing (%v); run `make images`", err)
	}

	ctx := context.Background()
	logger, err := zap.NewDevelopment(zap.IncreaseLevel(zap.InfoLevel))
	if err != nil {
		return fatalf("creating logger: %v", err)
	}
	defer logger.Sync() //nolint:errcheck

	tmp, err := os.MkdirTemp("", "caddy-spawn-it-")
	if err != nil {
		return fatalf("creating temporary directory: %v", err)
	}
	keepTmp := false
	defer func() {
		if !keepTmp {
			_ = os.RemoveAll(tmp)
		}
	}()

	addr := *address
	if addr == "" {
		state := filepath.Join("/run/caddy-spawn-it", randHex(8))
		d, err := spawner.StartDaemon(ctx, spawner.DaemonConfig{
			Root:  filepath.Join(tmp, "containerd"),
			State: state,
		}, logger)
		if err != nil {
			return fatalf("starting private containerd: %v", err)
		}
		addr = d.Address()
		logPath := filepath.Join(state, "containerd.log")
		defer func() {
			_ = d.Stop(context.Background())
			if mounts := mountsUnder(tmp, state); len(mounts) > 0 {
				// Removing a directory with live mounts under it would
				// delete through them: keep everything and say so.
				keepTmp = true
				fmt.Fprintf(os.Stderr, "FAIL integration/containerd: mounts left after containerd stopped, not removing %s and %s:\n  %s\n",
					tmp, state, strings.Join(mounts, "\n  "))
				code = 1
				return
			}
			if code != 0 {
				keepTmp = true
				fmt.Fprintf(os.Stderr, "integration/containerd: kept containerd log %s and root %s for inspection\n", logPath, tmp)
				return
			}
			_ = os.RemoveAll(state)
			_ = os.Remove(filepath.Dir(state)) // only if no other run uses it
		}()
	}

	if os.Getenv("SPAWN_PATH") != "stock" {
		fp, err := spawner.StartFastPath(ctx, spawner.FastPathConfig{
			StateDir:   filepath.Join("/run/caddy-spawn-it", "ts-"+randHex(8)),
			Containerd: addr,
		}, logger)
		if err != nil {
			return fatalf("starting the fast path (SPAWN_PATH=stock runs the stock path): %v", err)
		}
		env.fastPath = fp
		defer fp.Stop(context.Background())
	}

	env.ns = "caddy-spawn-test-" + randHex(8)
	env.owner = "it-" + spawner.NewOwnerID()
	c, err := client.New(addr, client.WithDefaultNamespace(env.ns), client.WithTimeout(10*time.Second))
	if err != nil {
		return fatalf("connecting to containerd at %s: %v", addr, err)
	}
	defer c.Close()
	env.client = c
	if _, err := c.Version(ctx); err != nil {
		return fatalf("containerd at %s does not answer: %v", addr, err)
	}

	if err := spawner.EnsureNamespace(ctx, c, env.ns); err != nil {
		return fatalf("creating namespace %s: %v", env.ns, err)
	}
	defer func() {
		if err := teardownNamespace(ctx, logger); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL integration/containerd: %v\n", err)
			code = 1
		}
	}()

	env.testfn, err = spawnsnapshots.Ensure(ctx, c, env.ns, spawnsnapshots.Source{
		Ref:         testfnRef,
		Archive:     filepath.Join(env.imagesDir, "testfn.tar"),
		Snapshotter: snapshotter,
	}, logger)
	if err != nil {
		return fatalf("importing %s: %v", testfnRef, err)
	}
	env.initPath, err = initbin.Install(filepath.Join(tmp, "init"))
	if err != nil {
		return fatalf("installing spawn-init: %v", err)
	}
	env.fifoDir = filepath.Join(tmp, "fifo")

	return m.Run()
}

// teardownNamespace checks that the tests left nothing of ours behind, that
// a final sweep leaves zero labelled objects, then removes the namespace's
// images and the namespace itself.
func teardownNamespace(ctx context.Context, logger *zap.Logger) error {
	ctx = namespaces.WithNamespace(ctx, env.ns)
	var errs []error

	// Every test destroys what it made; anything still here leaked.
	if left, err := managedLeftovers(ctx); err != nil {
		errs = append(errs, err)
	} else if left != "" {
		errs = append(errs, fmt.Errorf("objects leaked by the tests (before the final sweep): %s", left))
	}

	res, err := spawner.Sweep(ctx, env.client, env.ns, snapshotter, "", logger)
	if err != nil {
		errs = append(errs, fmt.Errorf("final sweep: %w", err))
	}
	if res != (spawner.SweepResult{}) {
		logger.Warn("final sweep removed leftovers", zap.Any("result", res))
	}
	if left, err := managedLeftovers(ctx); err != nil {
		errs = append(errs, err)
	} else if left != "" {
		errs = append(errs, fmt.Errorf("labelled objects left after a full sweep: %s", left))
	}

	is := env.client.ImageService()
	imgs, err := is.List(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("listing images in %s: %w", env.ns, err))
	}
	for i, img := range imgs {
		var opts []images.DeleteOpt
		if i == len(imgs)-1 {
			// The last delete runs the garbage collector before it returns,
			// so content and unpacked snapshots are gone when we delete the
			// namespace.
			opts = append(opts, images.SynchronousDelete())
		}
		if err := is.Delete(ctx, img.Name, opts...); err != nil {
			errs = append(errs, fmt.Errorf("deleting image %s: %w", img.Name, err))
		}
	}
	if err := env.client.NamespaceService().Delete(ctx, env.ns); err != nil {
		errs = append(errs, fmt.Errorf("deleting namespace %s: %w; still in it: %s", env.ns, err, namespaceContents(ctx)))
	}
	if err := hostprobe.RemoveNamespaceCgroups(env.ns); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// managedLeftovers describes the containers, snapshots and leases carrying
// our managed label, or returns "" when there are none.
func managedLeftovers(ctx context.Context) (string, error) {
	var left []string
	ctrs, err := env.client.Containers(ctx, managedFilter)
	if err != nil {
		return "", fmt.Errorf("listing containers: %w", err)
	}
	for _, c := range ctrs {
		left = append(left, "container "+c.ID())
	}
	err = env.client.SnapshotService(snapshotter).Walk(ctx, func(_ context.Context, info ctrsnapshots.Info) error {
		left = append(left, "snapshot "+info.Name)
		return nil
	}, managedFilter)
	if err != nil {
		return "", fmt.Errorf("walking snapshots: %w", err)
	}
	ls, err := env.client.LeasesService().List(ctx, managedFilter)
	if err != nil {
		return "", fmt.Errorf("listing leases: %w", err)
	}
	for _, l := range ls {
		left = append(left, "lease "+l.ID)
	}
	return strings.Join(left, ", "), nil
}

// namespaceContents lists what keeps a namespace from being deleted.
func namespaceContents(ctx context.Context) string {
	var out []string
	if imgs, err := env.client.ImageService().List(ctx); err == nil {
		for _, i := range imgs {
			out = append(out, "image "+i.Name)
		}
	}
	_ = env.client.ContentStore().Walk(ctx, func(info content.Info) error {
		out = append(out, fmt.Sprintf("blob %s labels=%v", info.Digest, info.Labels))
		return nil
	})
	_ = env.client.SnapshotService(snapshotter).Walk(ctx, func(_ context.Context, info ctrsnapshots.Info) error {
		out = append(out, fmt.Sprintf("snapshot %s labels=%v", info.Name, info.Labels))
		return nil
	})
	if ctrs, err := env.client.Containers(ctx); err == nil {
		for _, c := range ctrs {
			out = append(out, "container "+c.ID())
		}
	}
	if ls, err := env.client.LeasesService().List(ctx); err == nil {
		for _, l := range ls {
			out = append(out, fmt.Sprintf("lease %s labels=%v", l.ID, l.Labels))
		}
	}
	if len(out) == 0 {
		return "nothing visible"
	}
	return strings.Join(out, "; ")
}

// mountsUnder returns the mount points below any of dirs.
func mountsUnder(dirs ...string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := fields[4]
		for _, d := range dirs {
			if strings.HasPrefix(mp, d+"/") {
				out = append(out, mp)
			}
		}
	}
	return out
}

func randHex(n int) string {
	b := make([]byte, n/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
