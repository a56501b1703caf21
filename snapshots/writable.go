package snapshots

import (
	"context"
	"fmt"
	"strings"

	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/leases"
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
// to the snapshot's (e.g. client.WithRemapperLabels for a user namespace).
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

// A shared writable snapshot is the root filesystem of every container of
// one function on the fast path. There the task server puts each
// container's writable layer (the overlay's upper and work directories) on
// a tmpfs of its own, so the snapshot's own upper directory is never
// written: one snapshot prepared once per function serves all its
// containers, and a request pays for no snapshot Prepare and Remove (two
// metadata commits and a snapshotter transaction each, and the GC walk
// after). It is named "<prefix>-shared", labelled like the function's
// containers, and held by a lease of the same name while the function is
// in use (the containers that name it hold it too); RemoveShared lets go.
// The lease has no expiry: a live route must not lose it under it, and
// the start-up sweep removes the leases and snapshots of stale owners.

// sharedSuffix ends the key of every shared writable snapshot.
const sharedSuffix = "-shared"

// SharedKey is the key of a shared writable snapshot named by prefix.
func SharedKey(prefix string) string { return prefix + sharedSuffix }

// IsShared reports whether a container's snapshot key is a shared one:
// removing such a container must not remove its snapshot.
func IsShared(key string) bool { return strings.HasSuffix(key, sharedSuffix) }

// PrepareShared prepares the shared writable snapshot key of img in
// snapshotter of namespace ns, with its lease; opts add to the snapshot's
// labels (e.g. a user namespace's mapping).
func PrepareShared(ctx context.Context, c *client.Client, ns, snapshotter, key string, img client.Image, labels map[string]string, opts ...ctrsnapshots.Opt) error {
	ctx = namespaces.WithNamespace(ctx, ns)
	ls := c.LeasesService()
	l, err := ls.Create(ctx, leases.WithID(key), leases.WithLabels(labels), withLeaseLabels())
	if err != nil {
		return fmt.Errorf("creating lease %s: %w", key, err)
	}
	// The same preparation as a container's own snapshot (the image's
	// chain as parent, a copy remapped for a user namespace where the
	// snapshotter can't id-map), on a record that is thrown away.
	opts = append([]ctrsnapshots.Opt{ctrsnapshots.WithLabels(labels)}, opts...)
	ctr := containers.Container{Snapshotter: snapshotter}
	if err := client.WithNewSnapshot(key, img, opts...)(leases.WithLease(ctx, l.ID), c, &ctr); err != nil {
		_ = ls.Delete(context.WithoutCancel(ctx), l)
		return fmt.Errorf("preparing snapshot %s: %w", key, err)
	}
	return nil
}

// RemoveShared removes the shared writable snapshot key and its lease. The
// containers still running on it keep their mounts (their writable layers
// are their own); none can be made on it afterwards.
func RemoveShared(ctx context.Context, c *client.Client, ns, snapshotter, key string) error {
	ctx = namespaces.WithNamespace(ctx, ns)
	if err := c.LeasesService().Delete(ctx, leases.Lease{ID: key}); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("removing lease %s: %w", key, err)
	}
	if err := c.SnapshotService(snapshotter).Remove(ctx, key); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("removing snapshot %s: %w", key, err)
	}
	return nil
}
