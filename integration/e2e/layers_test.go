//go:build integration

package e2e

import (
	"context"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	ctrsnapshots "github.com/containerd/containerd/v2/core/snapshots"
)

// labelLayers marks the read-only views of image layers that fast-path
// containers share (spawner.LabelLayers, spelled out as labelManaged is).
const labelLayers = "dev.caddy-spawn/layers"

// layerViews lists the shared layer views in Caddy's managed containerd.
func (p *caddyProc) layerViews(t *testing.T) []string {
	t.Helper()
	c, err := p.containerd()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := queryCtx()
	defer cancel()
	var views []string
	err = c.SnapshotService(snapshotter).Walk(ctx, func(_ context.Context, info ctrsnapshots.Info) error {
		if info.Kind != ctrsnapshots.KindView {
			t.Errorf("snapshot %s labelled %s is a %v, want a view", info.Name, labelLayers, info.Kind)
		}
		views = append(views, info.Name)
		return nil
	}, `labels."`+labelLayers+`"==true`)
	if err != nil {
		t.Fatal(err)
	}
	return views
}

// TestSharedLayers (fast path): after a function's first container, its
// containers get no snapshot of their own — their records name none, and
// the only snapshot of ours is one read-only view of the image's layers —
// while each still writes to a root filesystem nobody else sees (marker
// files, as TestPoolSingleUse). A crash leaves the view to the next start,
// which sweeps it; a clean stop removes it.
func TestSharedLayers(t *testing.T) {
	if fastPathMode() == "off" {
		t.Fatal("TestSharedLayers tests the fast path: run it without SPAWN_FAST_PATH=off")
	}
	port := freePort(t)
	sites := site(port, pooledRoute("/marker", "marker", "marker", 3))
	p := startCaddy(t, port, sites)
	seen := map[string]bool{}
	// Enough requests that every pooled container was made after the
	// first one taught the spawner the function's layers.
	for i := range 8 {
		p.waitPoolFull(t, "marker", 3)
		p.markerWarmSingleUse(t, i, seen)
	}
	pooled := p.waitPoolFull(t, "marker", 3)

	views := p.layerViews(t)
	if len(views) != 1 {
		t.Fatalf("layer views %v, want exactly one for the route's image", views)
	}
	_, snaps, err := p.containerStates()
	if err != nil {
		t.Fatal(err)
	}
	tasks := p.ctrTasks(t)
	for _, id := range pooled {
		if info := p.containerInfo(t, id); info.SnapshotKey != "" {
			t.Errorf("pooled container %s has a snapshot of its own (%s): want the shared view", id, info.SnapshotKey)
		}
		for _, s := range snaps {
			if strings.HasPrefix(s, id) {
				t.Errorf("snapshot %s of container %s exists: want none per container", s, id)
			}
		}
		if _, ok := tasks[id]; !ok {
			t.Errorf("pooled container %s has no task in ctr tasks ls: %v", id, tasks)
		}
	}

	// SIGKILL: the view stays, with the dead process's owner label, and
	// the next start sweeps it (and makes its own).
	if err := syscall.Kill(p.proc.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.proc.Exited()
	p.ctrd = nil
	second := startCaddy(t, port, sites)
	for i := range 4 {
		second.waitPoolFull(t, "marker", 3)
		second.markerWarmSingleUse(t, 100+i, seen)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		now := second.layerViews(t)
		return !slices.Contains(now, views[0]) && len(now) == 1,
			"layer views after the restart: " + strings.Join(now, ", ") + "; want only the new process's, not " + views[0]
	})
	second.Stop()

	// A clean stop removed the view: a third start finds nothing to sweep.
	third := startCaddy(t, port, sites)
	if e, ok := third.logs.Find("swept leftovers", nil); ok {
		t.Errorf("the stopped Caddy left objects in containerd, swept by the next start: %v", e)
	}
	third.Stop()
}
