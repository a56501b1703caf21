package snapshots

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"
)

// unpack makes sure every layer of img is unpacked into snapshotter, so that
// preparing a container's rootfs is a single cheap snapshot, never an unpack.
//
// It always calls Unpack, even when the layers are there already (unpacked
// for another image sharing them): Unpack then applies nothing but labels
// img's config with its top snapshot, the reference that keeps the chain
// from containerd's garbage collector once the other image is removed.
func unpack(ctx context.Context, img client.Image, snapshotter string, logger *zap.Logger) error {
	was, err := img.IsUnpacked(ctx, snapshotter)
	if err != nil {
		return fmt.Errorf("checking unpack state of %s: %w", img.Name(), err)
	}
	start := time.Now()
	if err := img.Unpack(ctx, snapshotter); err != nil {
		return fmt.Errorf("unpacking %s into snapshotter %q: %w", img.Name(), snapshotter, err)
	}
	if !was {
		logger.Info("unpacked image",
			zap.String("image", img.Name()),
			zap.String("digest", img.Target().Digest.String()),
			zap.Duration("took", time.Since(start)))
	}
	return nil
}
