package snapshots

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
)

// Prune deletes the image records of ours (labelled LabelManaged: pulled,
// imported from archives, pins) in namespace ns whose names are not in
// keep; containerd's garbage collector then removes their content and
// unpacked snapshots, unless a container still uses them. Records not
// labelled as ours are never touched. It returns the names it deleted.
func Prune(ctx context.Context, c *client.Client, ns string, keep map[string]bool, logger *zap.Logger) ([]string, error) {
	ctx = namespaces.WithNamespace(ctx, ns)
	is := c.ImageService()
	imgs, err := is.List(ctx, LabelFilter(LabelManaged, "true"))
	if err != nil {
		return nil, fmt.Errorf("listing images in %s: %w", ns, err)
	}
	var removed []string
	for _, img := range imgs {
		if keep[img.Name] {
			continue
		}
		if err := is.Delete(ctx, img.Name); err != nil && !errdefs.IsNotFound(err) {
			return removed, fmt.Errorf("deleting unused image %s: %w", img.Name, err)
		}
		removed = append(removed, img.Name)
		logger.Info("removed unused image",
			zap.String("image", img.Name),
			zap.String("digest", img.Target.Digest.String()))
	}
	return removed, nil
}
