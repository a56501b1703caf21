//go:build integration

package containerd

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/caddy-spawn/caddy-spawn/snapshots"
)

func TestEnsure(t *testing.T) {
	ctx := nsCtx(t)

	t.Run("archive import unpacks and pins", func(t *testing.T) {
		ready, err := snapshots.Ensure(ctx, env.client, env.ns, snapshots.Source{
			Ref:         helloRef,
			Archive:     filepath.Join(env.imagesDir, "hello.tar"),
			Snapshotter: snapshotter,
		}, zaptest.NewLogger(t))
		if err != nil {
			t.Fatalf("Ensure(%s with archive): %v", helloRef, err)
		}
		if ready.Digest == "" || !strings.HasPrefix(ready.Digest, "sha256:") {
			t.Errorf("Digest = %q, want a sha256 digest", ready.Digest)
		}
		img, err := env.client.GetImage(ctx, helloRef)
		if err != nil {
			t.Fatalf("image %s not in namespace after import: %v", helloRef, err)
		}
		if got := img.Target().Digest.String(); got != ready.Digest {
			t.Errorf("image record points at %s, Ensure pinned %s", got, ready.Digest)
		}
		ok, err := img.IsUnpacked(ctx, snapshotter)
		if err != nil || !ok {
			t.Errorf("IsUnpacked(%s) = %v, %v; want true", snapshotter, ok, err)
		}
		if l := img.Labels()[snapshots.LabelManaged]; l != "true" {
			t.Errorf("imported image label %s = %q, want true", snapshots.LabelManaged, l)
		}

		// Already present: found without an archive, same digest.
		again, err := snapshots.Ensure(ctx, env.client, env.ns, snapshots.Source{
			Ref: helloRef, Snapshotter: snapshotter,
		}, zaptest.NewLogger(t))
		if err != nil {
			t.Fatalf("Ensure(%s) without archive after import: %v", helloRef, err)
		}
		if again.Digest != ready.Digest {
			t.Errorf("second Ensure pinned %s, first %s", again.Digest, ready.Digest)
		}
	})

	t.Run("suite image is unpacked", func(t *testing.T) {
		ok, err := env.testfn.Image.IsUnpacked(ctx, snapshotter)
		if err != nil || !ok {
			t.Errorf("IsUnpacked(%s) of %s = %v, %v; want true", snapshotter, testfnRef, ok, err)
		}
		if env.testfn.Digest == "" {
			t.Error("testfn Digest is empty")
		}
	})

	t.Run("missing ref without archive, pull_policy never", func(t *testing.T) {
		ref := "localhost/caddy-spawn/missing-" + randHex(8) + ":latest"
		_, err := snapshots.Ensure(ctx, env.client, env.ns, snapshots.Source{
			Ref: ref, Snapshotter: snapshotter, Pull: snapshots.PullNever,
		}, zaptest.NewLogger(t))
		if !errors.Is(err, snapshots.ErrImageNotFound) {
			t.Fatalf("Ensure(%s) err = %v, want ErrImageNotFound", ref, err)
		}
		if !strings.Contains(err.Error(), ref) {
			t.Errorf("error %q does not name the ref %s", err, ref)
		}
	})

	t.Run("archive without the ref", func(t *testing.T) {
		ref := "localhost/caddy-spawn/not-in-archive-" + randHex(8) + ":latest"
		_, err := snapshots.Ensure(ctx, env.client, env.ns, snapshots.Source{
			Ref:         ref,
			Archive:     filepath.Join(env.imagesDir, "hello.tar"),
			Snapshotter: snapshotter,
		}, zaptest.NewLogger(t))
		if !errors.Is(err, snapshots.ErrImageNotFound) {
			t.Fatalf("Ensure(%s from hello.tar) err = %v, want ErrImageNotFound", ref, err)
		}
		if !strings.Contains(err.Error(), ref) {
			t.Errorf("error %q does not name the ref %s", err, ref)
		}
	})
}
