package spawner

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"github.com/caddy-spawn/caddy-spawn/snapshots"
)

// SweepResult counts what a sweep removed.
type SweepResult struct {
	Containers int
	Snapshots  int
	Leases     int
}

// Sweep removes every container, snapshot and lease in namespace ns that
// carries our labels but belongs to another owner than keepOwner (pass ""
// to remove all of ours). Frozen tasks are thawed before they are killed.
// Not-found errors count as success: someone else removed it first.
func Sweep(ctx context.Context, c *client.Client, ns, snapshotter, keepOwner string, logger *zap.Logger) (SweepResult, error) {
	ctx = namespaces.WithNamespace(ctx, ns)
	var res SweepResult
	start := time.Now()

	ctrs, err := c.Containers(ctx, snapshots.LabelFilter(LabelManaged, "true"))
	if err != nil {
		return res, fmt.Errorf("listing containers in %s: %w", ns, err)
	}
	for _, ctr := range ctrs {
		labels, err := ctr.Labels(ctx)
		if err != nil {
			if errdefs.IsNotFound(err) {
				continue
			}
			return res, fmt.Errorf("reading labels of %s: %w", ctr.ID(), err)
		}
		if !snapshots.Leftover(labels, keepOwner) {
			continue
		}
		removed, err := removeContainer(ctx, ctr)
		if err != nil {
			logger.Warn("removing leftover container", zap.String("container", ctr.ID()), zap.Error(err))
			continue
		}
		if removed {
			res.Containers++
		}
	}

	// Writable snapshots of stale owners whose container never came to be
	// (the others went with their containers).
	res.Snapshots, err = snapshots.SweepWritable(ctx, c, ns, snapshotter, keepOwner, logger)
	if err != nil {
		return res, err
	}

	ls := c.LeasesService()
	lss, err := ls.List(ctx, snapshots.LabelFilter(LabelManaged, "true"))
	if err != nil {
		return res, fmt.Errorf("listing leases in %s: %w", ns, err)
	}
	for _, l := range lss {
		if !snapshots.Leftover(l.Labels, keepOwner) {
			continue
		}
		if err := ls.Delete(ctx, l); err != nil && !errdefs.IsNotFound(err) {
			logger.Warn("removing leftover lease", zap.String("lease", l.ID), zap.Error(err))
			continue
		}
		res.Leases++
	}
	if res != (SweepResult{}) {
		logger.Info("swept leftovers",
			zap.String("namespace", ns),
			zap.Int("containers", res.Containers),
			zap.Int("snapshots", res.Snapshots),
			zap.Int("leases", res.Leases),
			zap.Duration("took", time.Since(start)))
	}
	return res, nil
}

// removeContainer kills (thawing first) and deletes a container's task, then
// the container and its snapshot. It reports false when the container was
// gone already (its own teardown finished after it was listed).
func removeContainer(ctx context.Context, ctr client.Container) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, teardownTimeout)
	defer cancel()
	task, err := ctr.Task(ctx, nil)
	switch {
	case errdefs.IsNotFound(err):
	case err != nil:
		return false, fmt.Errorf("loading task of %s: %w", ctr.ID(), err)
	default:
		if err := thawLeftover(ctx, ctr, task); err != nil {
			return false, err
		}
		if _, err := task.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return false, fmt.Errorf("deleting task of %s: %w", ctr.ID(), err)
		}
	}
	err = ctr.Delete(ctx, client.WithSnapshotCleanup)
	switch {
	case errdefs.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("deleting container %s: %w", ctr.ID(), err)
	}
	return true, nil
}

// thawLeftover thaws a frozen task, so that it can act on SIGKILL. The pool
// freezes through the cgroup freezer behind the shim's back (containerd may
// then still report the task as running), so thaw there first; a task
// paused through containerd is resumed through it.
func thawLeftover(ctx context.Context, ctr client.Container, task client.Task) error {
	if st, err := task.Status(ctx); err == nil && st.Status == client.Paused {
		// Paused through containerd: resume through it, so the shim's own
		// state agrees. If the shim refuses (we froze it behind its back),
		// the freezer below does it.
		if err := task.Resume(ctx); err == nil || errdefs.IsNotFound(err) {
			return nil
		}
	}
	spec, err := ctr.Spec(ctx)
	if err != nil || spec.Linux == nil {
		return nil
	}
	if f, err := newFreezer(spec.Linux.CgroupsPath); err == nil {
		defer f.close()
		if err := f.thaw(); err != nil {
			return fmt.Errorf("thawing %s: %w", ctr.ID(), err)
		}
	}
	return nil
}

// reapInterval is how often a Spawner looks for containers of its own that
// are no longer tracked: ones whose teardown failed (containerd was down,
// say). A failed teardown also triggers a look soon after.
const reapInterval = 15 * time.Second

// janitor removes this Spawner's orphans until Close.
func (s *Spawner) janitor() {
	defer close(s.janitorDone)
	t := time.NewTicker(reapInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.reapKick:
			// Give containerd a moment: the failure may be an outage.
			select {
			case <-s.stop:
				return
			case <-time.After(time.Second):
			}
		}
		n, err := s.ReapOrphans(context.Background())
		switch {
		case err != nil:
			if ce := s.log.Check(zap.DebugLevel, "reaping orphans"); ce != nil {
				ce.Write(zap.Error(err))
			}
			s.kickReap()
		case n > 0:
			s.log.Info("removed orphaned containers", zap.Int("containers", n))
		}
	}
}

func (s *Spawner) kickReap() {
	select {
	case s.reapKick <- struct{}{}:
	default:
	}
}

// ReapOrphans removes containers of this Spawner's owner that it does not
// track (their teardown failed) and is not creating right now.
func (s *Spawner) ReapOrphans(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(s.ctx(ctx), time.Minute)
	defer cancel()
	ctrs, err := s.cfg.Client.Containers(ctx, snapshots.LabelFilter(LabelOwner, s.cfg.Owner))
	if err != nil {
		return 0, fmt.Errorf("listing containers: %w", err)
	}
	n := 0
	exists := map[string]bool{}
	for _, ctr := range ctrs {
		exists[ctr.ID()] = true
		if s.known(ctr.ID()) {
			continue
		}
		removed, err := removeContainer(ctx, ctr)
		if err != nil {
			return n, err
		}
		if removed {
			n++
		}
	}
	// Writable snapshots of ours whose container never came to be.
	removed, err := snapshots.RemoveOrphanWritable(ctx, s.cfg.Client, s.cfg.Namespace, s.cfg.Snapshotter, s.cfg.Owner,
		func(id string) bool { return exists[id] || s.known(id) })
	return n + removed, err
}
