package snapshots

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/distribution/reference"
	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
)

// ErrImageNotFound is returned when an image is neither in the namespace nor
// obtainable from the configured source.
var ErrImageNotFound = errors.New("image not found")

// Source says where an image comes from.
type Source struct {
	// Ref is the image reference, e.g. "localhost/caddy-spawn/hello:latest".
	Ref string
	// Archive, when set, is a docker-archive or OCI-archive tarball that is
	// imported before Ref is looked up.
	Archive string
	// Snapshotter to unpack into; "" is containerd's default.
	Snapshotter string
	// Pull says when to pull Ref from its registry. Default: PullMissing.
	// Nothing is pulled when Archive is set: the archive is the source.
	Pull PullPolicy
	// Auth, when set, are the credentials for Ref's registry.
	Auth *Auth
	// Registries holds app-wide registry settings: insecure hosts and
	// credentials for other registries.
	Registries Registries
}

// Ready is an image that is present, unpacked and pinned.
type Ready struct {
	Image client.Image
	// Digest is the manifest digest the image was pinned to.
	Digest string
	// Pin is the name of the image record that keeps Digest's content and
	// unpacked layers while a route uses them ("<name>@<digest>").
	Pin string
	// Took is how long it took to get it ready.
	Took time.Duration
}

// Ensure makes the image described by src present and unpacked in the
// namespace ns, and returns it pinned to its current digest. All content
// work runs under a lease so nothing half-made is left for the GC to miss.
func Ensure(ctx context.Context, c *client.Client, ns string, src Source, logger *zap.Logger) (*Ready, error) {
	ctx = namespaces.WithNamespace(ctx, ns)
	start := time.Now()

	ctx, done, err := c.WithLease(ctx, withLeaseLabels(), withLeaseExpiry())
	if err != nil {
		return nil, fmt.Errorf("creating lease for %s: %w", src.Ref, err)
	}
	defer done(context.WithoutCancel(ctx)) //nolint:errcheck // an expiring lease is collected anyway

	if src.Archive != "" {
		if err := importArchive(ctx, c, src); err != nil {
			return nil, err
		}
	}

	var img client.Image
	if src.Archive == "" && src.Pull == PullAlways {
		img, err = pull(ctx, c, src, logger)
		if err != nil {
			return nil, err
		}
	} else {
		img, err = c.GetImage(ctx, src.Ref)
		if full := NormalizedRef(src.Ref); errdefs.IsNotFound(err) && full != src.Ref {
			img, err = c.GetImage(ctx, full) // pulled under its full name
		}
		switch {
		case errdefs.IsNotFound(err) && src.Archive != "":
			return nil, fmt.Errorf("looking up image %s in namespace %s after importing %s: %w", src.Ref, ns, src.Archive, ErrImageNotFound)
		case errdefs.IsNotFound(err) && src.Pull == PullNever:
			return nil, fmt.Errorf("looking up image %s in namespace %s with pull_policy never: %w (import it, set image_archive or allow pulls)", src.Ref, ns, ErrImageNotFound)
		case errdefs.IsNotFound(err):
			img, err = pull(ctx, c, src, logger)
			if err != nil {
				return nil, err
			}
		case err != nil:
			return nil, fmt.Errorf("looking up image %s: %w", src.Ref, err)
		}
	}
	// Pin: an Image resolved now keeps its target descriptor, so a tag that
	// moves later does not change containers made from it.
	img = client.NewImageWithPlatform(c, img.Metadata(), nil)

	if err := unpack(ctx, img, src.Snapshotter, logger); err != nil {
		return nil, err
	}
	digest := img.Target().Digest.String()
	pin, err := pinImage(ctx, c, src.Ref, img)
	if err != nil {
		return nil, err
	}
	return &Ready{Image: img, Digest: digest, Pin: pin, Took: time.Since(start)}, nil
}

// pinImage records img under "<name>@<digest>", labelled as ours, so its
// content and unpacked layers outlive a tag that moves (a reload with
// pull_policy always, another route pulling the same reference) for as
// long as a route uses them; Prune removes the record afterwards.
func pinImage(ctx context.Context, c *client.Client, ref string, img client.Image) (string, error) {
	pin, err := PinName(ref, img.Target().Digest.String())
	if err != nil {
		return "", err
	}
	_, err = c.ImageService().Create(ctx, images.Image{
		Name:   pin,
		Target: img.Target(),
		Labels: map[string]string{LabelManaged: "true", LabelPin: "true"},
	})
	if err != nil && !errdefs.IsAlreadyExists(err) {
		return "", fmt.Errorf("pinning image %s as %s: %w", ref, pin, err)
	}
	return pin, nil
}

// NormalizedRef is ref as containerd names a pulled image: with its
// registry, repository path and tag, e.g. "busybox" is
// "docker.io/library/busybox:latest". An unparsable ref is returned as is.
func NormalizedRef(ref string) string {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return ref
	}
	return named.String()
}

// PinName is the name of the image record that pins ref to digest:
// "<name>@<digest>", e.g. "docker.io/library/busybox@sha256:…".
func PinName(ref, digest string) (string, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("parsing image reference %q: %w", ref, err)
	}
	return reference.TrimNamed(named).Name() + "@" + digest, nil
}

func importArchive(ctx context.Context, c *client.Client, src Source) error {
	f, err := os.Open(src.Archive)
	if err != nil {
		return fmt.Errorf("opening image archive for %s: %w", src.Ref, err)
	}
	defer f.Close()
	imgs, err := c.Import(ctx, f, client.WithImageLabels(map[string]string{LabelManaged: "true"}))
	if err != nil {
		return fmt.Errorf("importing image archive %s: %w", src.Archive, err)
	}
	for _, im := range imgs {
		if im.Name == src.Ref {
			return nil
		}
	}
	names := make([]string, 0, len(imgs))
	for _, im := range imgs {
		names = append(names, im.Name)
	}
	return fmt.Errorf("importing image archive %s: it holds %v, not %s: %w", src.Archive, names, src.Ref, ErrImageNotFound)
}
