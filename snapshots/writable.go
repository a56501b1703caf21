package snapshots

import (
	"context"
	"fmt"
	"strings"

	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	ctrsnapshots "github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
)

// A container's writable snapshot is its root filesystem: one active
// snapshot on top of the image's unpacked chain, named
// "<containerID>-rootfs" and labelled like the container. It is prepared
// while the container record is created (client.NewContainer leases it
// internally) and removed with the container (client.WithSnapshotCleanup).
// The functions here cover the rest: removing one whose container never came
// to be, and sweeping the ones of stale owners.

// writableSuffix ends the key of every writable snapshot.
const writableSuffix = "-rootfs"

// WritableKey is the key of the writable snapshot of container id.
func WritableKey(id string) string { return id + writableSuffix }

// WithWritable gives a new container (id) its own writable snapshot of img
// in snapshotter, labelled with labels. It is a client.NewContainer option:
// the container's record keeps the snapshot alive from then on. opts add
// to the snapshot's (e.g. a user namespace's remap labels).
func WithWritable(snapshotter, id string, img client.Image, labels map[string]string, opts ...ctrsnapshots.Opt) client.NewContainerOpts {
	return func(ctx context.Context, c *client.Client, ctr *containers.Container) error {
		if err := client.WithSnapshotter(snapshotter)(ctx, c, ctr); err != nil {
			return err
		}
		opts := append([]ctrsnapshots.Opt{ctrsnapshots.WithLabels(labels)}, opts...)
		return client.WithNewSnapshot(WritableKey(id), img, opts...)(ctx, c, ctr)
	}
}

// RemoveWritable removes the writable snapshot of container id from
// snapshotter in namespace ns. One that does not exist is not an error.
func RemoveWritable(ctx context.Context, c *client.Client, ns, snapshotter, id string) error {
	ctx = namespaces.WithNamespace(ctx, ns)
	key := WritableKey(id)
	if err := c.SnapshotService(snapshotter).Remove(ctx, key); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("removing snapshot %s: %w", key, err)
	}
	return nil
}

// SweepWritable removes every snapshot of ours in snapshotter of namespace
// ns that belongs to another owner than keepOwner ("" removes all of ours;
// see Leftover), and returns how many it removed. A snapshot it cannot
// remove is logged and skipped; only failing to list them is an error.
func SweepWritable(ctx context.Context, c *client.Client, ns, snapshotter, keepOwner string, logger *zap.Logger) (int, error) {
	ctx = namespaces.WithNamespace(ctx, ns)
	sn := c.SnapshotService(snapshotter)
	var keys []string
	err := sn.Walk(ctx, func(_ context.Context, info ctrsnapshots.Info) error {
		if Leftover(info.Labels, keepOwner) {
			keys = append(keys, info.Name)
		}
		return nil
	}, LabelFilter(LabelManaged, "true"))
	if err != nil {
		return 0, fmt.Errorf("listing snapshots in %s: %w", ns, err)
	}
	n := 0
	for _, k := range keys {
		if err := sn.Remove(ctx, k); err != nil && !errdefs.IsNotFound(err) {
			logger.Warn("removing leftover snapshot", zap.String("snapshot", k), zap.Error(err))
			continue
		}
		n++
	}
	return n, nil
}

// RemoveOrphanWritable removes the writable snapshots of owner in
// snapshotter of namespace ns whose container is not one that keep accepts
// (by container ID): those whose container never came to be or is gone.
// It returns how many it removed, and stops at the first failure.
func RemoveOrphanWritable(ctx context.Context, c *client.Client, ns, snapshotter, owner string, keep func(id string) bool) (int, error) {
	ctx = namespaces.WithNamespace(ctx, ns)
	sn := c.SnapshotService(snapshotter)
	var orphans []string
	err := sn.Walk(ctx, func(_ context.Context, info ctrsnapshots.Info) error {
		id, ok := strings.CutSuffix(info.Name, writableSuffix)
		if ok && !keep(id) {
			orphans = append(orphans, info.Name)
		}
		return nil
	}, LabelFilter(LabelOwner, owner))
	if err != nil {
		return 0, fmt.Errorf("listing snapshots: %w", err)
	}
	n := 0
	for _, name := range orphans {
		if err := sn.Remove(ctx, name); err != nil && !errdefs.IsNotFound(err) {
			return n, fmt.Errorf("removing snapshot %s: %w", name, err)
		}
		n++
	}
	return n, nil
}
