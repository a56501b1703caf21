package spawner

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"

	"github.com/caddy-spawn/caddy-spawn/snapshots"
)

// On the fast path with the overlay snapshotter, a function's containers
// share one writable snapshot (snapshots.PrepareShared): the task server
// gives each container a writable layer of its own on a tmpfs over the
// image's layers, so the snapshot's upper directory is never written and a
// request pays for no snapshot Prepare and Remove. The spec says so
// (AnnotationSharedRootfs), and the task server refuses a container it
// could not give its own layer. On the stock path every container has its
// own writable snapshot.

// sharedSnapshots are the shared writable snapshots of the functions in use.
type sharedSnapshots struct {
	mu sync.Mutex
	m  map[*Function]string // snapshot key
}

// sharesRootfs reports whether this Spawner's containers share their
// function's writable snapshot.
func (s *Spawner) sharesRootfs() bool {
	return s.cfg.FastPath != nil && s.cfg.Snapshotter == "overlayfs"
}

// sharedRootfsAnnotation is the spec annotation of a shared rootfs, none
// when containers have their own.
func (s *Spawner) sharedRootfsAnnotation() map[string]string {
	if !s.sharesRootfs() {
		return nil
	}
	return map[string]string{AnnotationSharedRootfs: strconv.FormatBool(true)}
}

// sharedSnapshot returns the key of fn's shared writable snapshot of img,
// preparing it on first use.
func (s *Spawner) sharedSnapshot(ctx context.Context, fn *Function, img client.Image) (string, error) {
	s.shared.mu.Lock()
	defer s.shared.mu.Unlock()
	if key, ok := s.shared.m[fn]; ok {
		return key, nil
	}
	key := snapshots.SharedKey("caddy-spawn-" + fn.Name + "-" + randHex(8))
	if err := snapshots.PrepareShared(ctx, s.cfg.Client, s.cfg.Namespace, s.cfg.Snapshotter, key, img,
		fn.labels(s.cfg.Owner), fn.snapshotOpts()...); err != nil {
		return "", err
	}
	if s.shared.m == nil {
		s.shared.m = map[*Function]string{}
	}
	s.shared.m[fn] = key
	return key, nil
}

// withSharedSnapshot makes a new container's rootfs the shared snapshot key.
func (s *Spawner) withSharedSnapshot(key string) client.NewContainerOpts {
	return func(ctx context.Context, c *client.Client, ctr *containers.Container) error {
		if err := client.WithSnapshotter(s.cfg.Snapshotter)(ctx, c, ctr); err != nil {
			return err
		}
		return client.WithSnapshot(key)(ctx, c, ctr)
	}
}

// Forget lets go of what this Spawner keeps for fn once no container of it
// is wanted any more (its pool is closed): its shared writable snapshot and
// its spec template. Containers still serving keep running.
func (s *Spawner) Forget(ctx context.Context, fn *Function) {
	s.tmpl.mu.Lock()
	delete(s.tmpl.m, fn)
	s.tmpl.mu.Unlock()
	s.shared.mu.Lock()
	key, ok := s.shared.m[fn]
	delete(s.shared.m, fn)
	s.shared.mu.Unlock()
	if ok {
		s.removeShared(ctx, key)
	}
}

// removeSharedAll removes every shared snapshot (at Close).
func (s *Spawner) removeSharedAll(ctx context.Context) {
	s.shared.mu.Lock()
	m := s.shared.m
	s.shared.m = nil
	s.shared.mu.Unlock()
	for _, key := range m {
		s.removeShared(ctx, key)
	}
}

func (s *Spawner) removeShared(ctx context.Context, key string) {
	if err := snapshots.RemoveShared(ctx, s.cfg.Client, s.cfg.Namespace, s.cfg.Snapshotter, key); err != nil {
		// The start-up sweep of the next process removes it.
		s.log.Warn("removing a shared writable snapshot", zap.String("snapshot", key), zap.Error(err))
	}
}

// deleteOpts are the options of deleting a container whose rootfs snapshot
// is key: its own snapshot goes with it, a shared one stays.
func deleteOpts(key string) []client.DeleteOpts {
	if snapshots.IsShared(key) {
		return nil
	}
	return []client.DeleteOpts{client.WithSnapshotCleanup}
}

// errSharedSnapshot wraps a failure to prepare fn's shared snapshot.
func errSharedSnapshot(fn *Function, err error) error {
	return fmt.Errorf("preparing the shared writable snapshot of %s: %w", fn.Name, err)
}
