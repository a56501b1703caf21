//go:build integration

package containerd

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap/zaptest"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	ctrsnapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"github.com/caddy-spawn/caddy-spawn/snapshots"
	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// TestPinAndPrune: a digest pinned by Ensure survives its tag moving and a
// garbage collection; Prune releases what no route keeps, after which the
// garbage collector leaves no content or snapshot of it. It runs in a
// namespace of its own, because Prune removes every image of ours that is
// not kept.
func TestPinAndPrune(t *testing.T) {
	ns := env.ns + "-prune"
	ctx := scratchNamespace(t, ns)
	logger := zaptest.NewLogger(t)
	reg := startRegistry(t, "", "")
	ensure := func() *snapshots.Ready {
		t.Helper()
		r, err := snapshots.Ensure(ctx, env.client, ns, snapshots.Source{
			Ref: reg.host + "/caddy-spawn/pruned:latest", Snapshotter: snapshotter, Pull: snapshots.PullAlways,
		}, logger)
		if err != nil {
			t.Fatalf("Ensure: %v", err)
		}
		return r
	}
	ref, _ := reg.push(t, "pruned", "latest", "v1")
	r1 := ensure()
	reg.push(t, "pruned", "latest", "v2")
	r2 := ensure()
	if r1.Pin == r2.Pin || r1.Digest == r2.Digest {
		t.Fatalf("pins %s and %s for digests %s and %s", r1.Pin, r2.Pin, r1.Digest, r2.Digest)
	}
	names := imageNames(t, ctx)
	for _, n := range []string{ref, r1.Pin, r2.Pin} {
		if !slices.Contains(names, n) {
			t.Errorf("image %s missing; have %v", n, names)
		}
	}

	// The tag moved to v2; v1 is kept by its pin alone, through a GC.
	collectGarbage(t, ctx)
	id := "prune-" + randHex(8)
	c, err := env.client.NewContainer(ctx, id, client.WithNewSnapshot(id+"-rootfs", r1.Image))
	if err != nil {
		t.Fatalf("container from the pinned v1 after the tag moved and a GC: %v", err)
	}
	if err := c.Delete(context.WithoutCancel(ctx), client.WithSnapshotCleanup); err != nil {
		t.Fatal(err)
	}

	// A reload: only v2 is used now. (The chain IDs come from the image
	// configs, which go with the GC.)
	top1, top2 := topChain(t, ctx, r1), topChain(t, ctx, r2)
	removed, err := snapshots.Prune(ctx, env.client, ns, map[string]bool{ref: true, r2.Pin: true}, logger)
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if !slices.Equal(removed, []string{r1.Pin}) {
		t.Errorf("Prune removed %v, want [%s]", removed, r1.Pin)
	}
	collectGarbage(t, ctx)
	if _, err := env.client.ContentStore().Info(ctx, r1.Image.Target().Digest); !errdefs.IsNotFound(err) {
		t.Errorf("v1 manifest %s after prune and GC: err = %v, want not found", r1.Digest, err)
	}
	if _, err := env.client.SnapshotService(snapshotter).Stat(ctx, top1); !errdefs.IsNotFound(err) {
		t.Errorf("v1's top snapshot after prune and GC: err = %v, want not found", err)
	}
	if _, err := env.client.SnapshotService(snapshotter).Stat(ctx, top2); err != nil {
		t.Errorf("v2's top snapshot after pruning v1: %v", err)
	}

	// The route is removed: nothing of it is left.
	if _, err := snapshots.Prune(ctx, env.client, ns, nil, logger); err != nil {
		t.Fatalf("Prune: %v", err)
	}
	collectGarbage(t, ctx)
	if names := imageNames(t, ctx); len(names) != 0 {
		t.Errorf("images left after pruning everything: %v", names)
	}
	var left []string
	_ = env.client.ContentStore().Walk(ctx, func(info content.Info) error {
		left = append(left, "blob "+info.Digest.String())
		return nil
	})
	_ = env.client.SnapshotService(snapshotter).Walk(ctx, func(_ context.Context, info ctrsnapshots.Info) error {
		left = append(left, "snapshot "+info.Name)
		return nil
	})
	if len(left) > 0 {
		t.Errorf("left after pruning everything and a GC: %v", left)
	}
}

// TestPruneSharedLayers: an image whose layers were already unpacked for
// another image (testfn.tar's layers are the base of the pulled one) keeps
// them when the other image is pruned and garbage-collected.
func TestPruneSharedLayers(t *testing.T) {
	ns := env.ns + "-shared"
	ctx := scratchNamespace(t, ns)
	logger := zaptest.NewLogger(t)
	reg := startRegistry(t, "", "")
	ref, _ := reg.push(t, "shared", "latest", "v1")
	if _, err := snapshots.Ensure(ctx, env.client, ns, snapshots.Source{Ref: ref, Snapshotter: snapshotter}, logger); err != nil {
		t.Fatalf("Ensure(%s): %v", ref, err)
	}
	base, err := snapshots.Ensure(ctx, env.client, ns, snapshots.Source{
		Ref: testfnRef, Archive: filepath.Join(env.imagesDir, "testfn.tar"), Snapshotter: snapshotter,
	}, logger)
	if err != nil {
		t.Fatalf("Ensure(%s): %v", testfnRef, err)
	}
	if _, err := snapshots.Prune(ctx, env.client, ns, map[string]bool{testfnRef: true, base.Pin: true}, logger); err != nil {
		t.Fatalf("Prune: %v", err)
	}
	collectGarbage(t, ctx)
	id := "shared-" + randHex(8)
	c, err := env.client.NewContainer(ctx, id, client.WithNewSnapshot(id+"-rootfs", base.Image))
	if err != nil {
		t.Fatalf("container from %s after the image sharing its layers was pruned: %v", testfnRef, err)
	}
	if err := c.Delete(context.WithoutCancel(ctx), client.WithSnapshotCleanup); err != nil {
		t.Fatal(err)
	}
}

func imageNames(t *testing.T, ctx context.Context) []string {
	t.Helper()
	imgs, err := env.client.ImageService().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range imgs {
		names = append(names, i.Name)
	}
	return names
}

// topChain is the chain ID of ready's top layer: its unpacked snapshot.
func topChain(t *testing.T, ctx context.Context, ready *snapshots.Ready) string {
	t.Helper()
	diffs, err := ready.Image.RootFS(ctx)
	if err != nil {
		t.Fatalf("RootFS: %v", err)
	}
	return identity.ChainID(diffs).String()
}

// collectGarbage runs containerd's garbage collector to completion: a
// synchronous delete of a throw-away image record triggers it.
func collectGarbage(t *testing.T, ctx context.Context) {
	t.Helper()
	is := env.client.ImageService()
	name := "gc-trigger-" + randHex(8)
	if _, err := is.Create(ctx, images.Image{Name: name, Target: emptyTarget(), CreatedAt: time.Now()}); err != nil {
		t.Fatalf("creating %s: %v", name, err)
	}
	if err := is.Delete(ctx, name, images.SynchronousDelete()); err != nil {
		t.Fatalf("deleting %s: %v", name, err)
	}
}

// emptyTarget is a manifest descriptor of nothing in the content store.
func emptyTarget() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("gc-trigger"), Size: 1}
}

// scratchNamespace creates namespace ns for one test, which Prune may empty
// without touching the suite's images, and deletes it (images first) at the
// end. It returns a test context in ns.
func scratchNamespace(t *testing.T, ns string) context.Context {
	t.Helper()
	ctx := namespaces.WithNamespace(t.Context(), ns)
	if err := spawner.EnsureNamespace(ctx, env.client, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := namespaces.WithNamespace(context.Background(), ns)
		is := env.client.ImageService()
		imgs, _ := is.List(ctx)
		for _, img := range imgs {
			_ = is.Delete(ctx, img.Name, images.SynchronousDelete())
		}
		if err := env.client.NamespaceService().Delete(ctx, ns); err != nil {
			t.Errorf("deleting namespace %s: %v", ns, err)
		}
	})
	return ctx
}
