//go:build integration

package containerd

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/image-spec/identity"
	"go.uber.org/zap/zaptest"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	ctrsnapshots "github.com/containerd/containerd/v2/core/snapshots"

	"github.com/caddy-spawn/caddy-spawn/spawner"
)

func TestKillRunning(t *testing.T) {
	s := newSpawner(t, "")
	inst := create(t, s, testfn(t, "spin"))
	if err := inst.Begin(nil); err != nil {
		t.Fatalf("Begin: %v", err)
	}
	// Wait for "started": the program is running, not just the init.
	started := make(chan error, 1)
	go func() {
		br := bufio.NewReader(inst.Stdout())
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				started <- err
				return
			}
			if line == "started\n" {
				started <- nil
				_, _ = io.Copy(io.Discard, br)
				return
			}
		}
	}()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("reading stdout before \"started\": %v", err)
		}
	case <-time.After(runTimeout):
		t.Fatal("spin never reported started")
	}
	select {
	case <-inst.Exited():
		t.Fatal("spin exited by itself")
	case <-time.After(200 * time.Millisecond):
	}

	inst.Kill(t.Context())
	if !waitClosed(inst.Exited(), 5*time.Second) {
		t.Fatal("Exited not closed 5s after Kill")
	}
	if code := inst.ExitStatus().Code; code != 128+9 {
		t.Errorf("exit code after Kill = %d, want 137 (SIGKILL)", code)
	}

	destroyWithin(t, inst, 10*time.Second)
	assertGone(t, inst.ID)
}

// TestDestroyPaused: a frozen task must be torn down completely and
// without hanging, whether containerd paused it or its cgroup was frozen
// directly (the pool's way).
func TestDestroyPaused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pause func(*testing.T, string)
	}{
		{"containerd pause", pause},
		{"cgroup freezer", freeze},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSpawner(t, "")
			inst := create(t, s, testfn(t, "env"))
			tc.pause(t, inst.ID)

			destroyWithin(t, inst, 10*time.Second)
			if !waitClosed(inst.Exited(), time.Second) {
				t.Error("Exited not closed after Destroy of a paused instance")
			}
			assertGone(t, inst.ID)
		})
	}
}

func TestSweep(t *testing.T) {
	ctx := nsCtx(t)
	old := newSpawner(t, "old")
	// One Function, as a route has: on the fast path its containers after
	// the first share a view of the image's layers.
	fn := testfn(t, "env")
	running := create(t, old, fn)
	paused := create(t, old, fn)
	pause(t, paused.ID)
	frozen := create(t, old, fn)
	freeze(t, frozen.ID)

	// An orphan of "old": a snapshot prepared ahead under a pool lease,
	// whose process died before it made the container (rule 19).
	leaseLabels := map[string]string{spawner.LabelManaged: "true", spawner.LabelOwner: "old"}
	lease, err := env.client.LeasesService().Create(ctx, leases.WithRandomID(), leases.WithLabels(leaseLabels),
		leases.WithExpiration(time.Hour))
	if err != nil {
		t.Fatalf("creating lease: %v", err)
	}
	diffIDs, err := env.testfn.Image.RootFS(ctx)
	if err != nil {
		t.Fatalf("reading rootfs of %s: %v", testfnRef, err)
	}
	orphanKey := "caddy-spawn-" + fnName(t) + "-orphan-rootfs"
	sn := env.client.SnapshotService(snapshotter)
	if _, err := sn.Prepare(leases.WithLease(ctx, lease.ID), orphanKey, identity.ChainID(diffIDs).String(),
		ctrsnapshots.WithLabels(leaseLabels)); err != nil {
		t.Fatalf("preparing orphan snapshot: %v", err)
	}

	current := newSpawner(t, "new")
	survivor := create(t, current, testfn(t, "env"))

	// That view is a snapshot of "old" the sweep removes too.
	var oldViews []string
	err = sn.Walk(ctx, func(_ context.Context, info ctrsnapshots.Info) error {
		if info.Labels[spawner.LabelOwner] == "old" {
			oldViews = append(oldViews, info.Name)
		}
		return nil
	}, `labels."`+spawner.LabelLayers+`"==true`)
	if err != nil {
		t.Fatal(err)
	}
	if fast := env.fastPath != nil; fast && len(oldViews) != 1 || !fast && len(oldViews) != 0 {
		t.Errorf("layer views of the old owner %v (fast path %v), want one on the fast path, none on the stock path", oldViews, env.fastPath != nil)
	}

	res, err := spawner.Sweep(ctx, env.client, env.ns, snapshotter, "new", zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if want := (spawner.SweepResult{Containers: 3, Snapshots: 1 + len(oldViews), Leases: 1}); res != want {
		t.Errorf("Sweep = %+v, want %+v", res, want)
	}
	for _, v := range oldViews {
		if _, err := sn.Stat(ctx, v); err == nil {
			t.Errorf("layer view %s of the old owner survived the sweep", v)
		}
	}
	for _, inst := range []*spawner.Instance{running, paused, frozen} {
		assertGone(t, inst.ID)
		if !waitClosed(inst.Exited(), 5*time.Second) {
			t.Errorf("%s: Exited not closed after its container was swept", inst.ID)
		}
		// Destroying what the sweep already removed is quick and quiet.
		destroyWithin(t, inst, 5*time.Second)
	}
	if _, err := sn.Stat(ctx, orphanKey); err == nil {
		t.Errorf("orphan snapshot %s survived the sweep", orphanKey)
	}
	if ls, err := env.client.LeasesService().List(ctx, "id=="+lease.ID); err != nil || len(ls) != 0 {
		t.Errorf("orphan lease %s: list = %v, %v; want gone", lease.ID, ls, err)
	}

	// The current owner's instance is untouched and still serves.
	c := assertPresent(t, survivor.ID)
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatalf("task of survivor %s: %v", survivor.ID, err)
	}
	if st, err := task.Status(ctx); err != nil || st.Status != client.Running {
		t.Errorf("survivor %s status = %+v, %v; want running", survivor.ID, st, err)
	}
	out := serve(t, survivor, []string{"SURVIVED=yes"}, nil)
	if !strings.Contains(string(out.stdout), "\nSURVIVED=yes\n") || out.status.Code != 0 {
		t.Errorf("survivor answered %q, exit %d", out.stdout, out.status.Code)
	}
	destroyWithin(t, survivor, 10*time.Second)
	assertGone(t, survivor.ID)
}

// TestStdinIgnored: a program that exits without reading its stdin must not
// leave a body writer blocked forever.
func TestStdinIgnored(t *testing.T) {
	s := newSpawner(t, "")
	inst := create(t, s, testfn(t, "exit", "0"))
	if err := inst.Begin(nil); err != nil {
		t.Fatalf("Begin: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, inst.Stdout()) }()
	go func() { _, _ = io.Copy(io.Discard, inst.Stderr()) }()

	wrote := make(chan error, 1)
	go func() {
		_, err := io.Copy(inst.Stdin(), bytes.NewReader(make([]byte, 1<<20)))
		wrote <- err
	}()
	if !waitClosed(inst.Exited(), 10*time.Second) {
		t.Fatal("program did not exit")
	}
	if code := inst.ExitStatus().Code; code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}

	destroyWithin(t, inst, 10*time.Second)
	select {
	case err := <-wrote:
		t.Logf("body write returned: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("body write to a task that exited is still blocked 10s after Destroy")
	}
	assertGone(t, inst.ID)
}

func TestDrain(t *testing.T) {
	s := newSpawner(t, "")
	fn := testfn(t, "env")
	var insts []*spawner.Instance
	for range 3 {
		insts = append(insts, create(t, s, fn))
	}
	pause(t, insts[2].ID) // a pooled one, still frozen

	// One released with a delay: Drain waits for it too, and it is still
	// there until the delay has passed.
	for _, inst := range insts[:2] {
		s.Release(inst, 0)
	}
	s.Release(insts[2], 2*time.Second)
	if _, err := env.client.LoadContainer(nsCtx(t), insts[2].ID); err != nil {
		t.Fatalf("released with a delay, yet already gone at once: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	start := time.Now()
	s.Drain(ctx)
	if ctx.Err() != nil {
		t.Fatalf("Drain gave up after %v: releases still running", time.Since(start))
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Errorf("Drain returned after %v, before the delayed release could begin (2s)", took)
	}
	for _, inst := range insts {
		assertGone(t, inst.ID)
	}
}

// destroyWithin destroys inst and fails if that takes longer than d.
func destroyWithin(t *testing.T, inst *spawner.Instance, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	start := time.Now()
	go func() {
		inst.Destroy(context.Background())
		close(done)
	}()
	if !waitClosed(done, d) {
		<-done
		t.Errorf("Destroy(%s) took %v, want under %v", inst.ID, time.Since(start), d)
	}
}
