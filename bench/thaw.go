//go:build integration

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/caddy-spawn/caddy-spawn/snapshots"
	"github.com/caddy-spawn/caddy-spawn/spawner"
	"github.com/caddy-spawn/caddy-spawn/spawner/initbin"
)

// runThaw measures, in this process with the spawner package, the two ways
// to get a paused container running again: the cgroup freezer
// (Instance.Pause/Thaw) and containerd (Task.Pause/Resume, which execs
// runc). Then it serves the hello program from freshly paused containers
// step by step, to show where a warm request's time goes without Caddy and
// without a refill running beside it.
func (b *bench) runThaw(ctx context.Context) (retErr error) {
	defer func() {
		if err := b.dropNamespace(nsThaw); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()
	nsCtx := namespaces.WithNamespace(ctx, nsThaw)
	if err := spawner.EnsureNamespace(nsCtx, b.ctrd, nsThaw); err != nil {
		return err
	}
	ready, err := snapshots.Ensure(ctx, b.ctrd, nsThaw, snapshots.Source{
		Ref: helloRef, Archive: b.pre.helloTar, Snapshotter: snapshotter,
	}, b.log)
	if err != nil {
		return fmt.Errorf("importing %s into %s: %w", helloRef, nsThaw, err)
	}
	initPath, err := initbin.Install(filepath.Join(b.tmp, "init"))
	if err != nil {
		return err
	}
	sp, err := spawner.New(spawner.Config{
		Client:      b.ctrd,
		Namespace:   nsThaw,
		Snapshotter: snapshotter,
		InitBinary:  initPath,
		FIFODir:     filepath.Join(b.benchRun, "thaw-fifo"),
		Owner:       "bench-" + spawner.NewOwnerID(),
		Logger:      b.log,
	})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		sp.Close(cctx)
	}()
	fn := &spawner.Function{Name: "thaw", Key: "bench-thaw", Image: ready}

	// 1. One started container (its init waits for the request frame),
	// paused and resumed both ways, alternately.
	progress("thaw: %d freezer thaws and %d containerd resumes", b.cfg.thaw, b.cfg.thaw)
	inst, err := sp.Create(ctx, fn)
	if err != nil {
		return fmt.Errorf("creating a container: %w", err)
	}
	defer inst.Destroy(context.Background())
	if err := waitReady(ctx, inst); err != nil {
		return err
	}
	ctr, err := b.ctrd.LoadContainer(nsCtx, inst.ID)
	if err != nil {
		return err
	}
	task, err := ctr.Task(nsCtx, nil)
	if err != nil {
		return err
	}
	var freezer, resume []time.Duration
	warmup := 3
	for i := range warmup + b.cfg.thaw {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := inst.Pause(); err != nil {
			return fmt.Errorf("freezer pause: %w", err)
		}
		t0 := time.Now()
		if err := inst.Thaw(); err != nil {
			return fmt.Errorf("freezer thaw: %w", err)
		}
		dFreezer := time.Since(t0)

		if err := task.Pause(nsCtx); err != nil {
			return fmt.Errorf("containerd pause: %w", err)
		}
		t0 = time.Now()
		if err := task.Resume(nsCtx); err != nil {
			return fmt.Errorf("containerd resume: %w", err)
		}
		dResume := time.Since(t0)
		if i >= warmup {
			freezer = append(freezer, dFreezer)
			resume = append(resume, dResume)
		}
	}
	select {
	case <-inst.Exited():
		return errors.New("the container exited during the pause/resume cycles")
	default:
	}
	inst.Destroy(ctx)
	fz, rs := summarize(freezer), summarize(resume)
	b.res.ThawFreezerP50, b.res.ThawFreezerP99 = fz.p50, fz.p99
	b.res.ThawResumeP50, b.res.ThawResumeP99 = rs.p50, rs.p99
	b.res.thawFreezer, b.res.thawResume = fz, rs

	// 2. The warm path in process: a fresh paused container per sample,
	// then thaw, send the request frame, read stdout to EOF, see the exit.
	progress("thaw: %d in-process warm serves", b.cfg.thaw)
	var tThaw, tFirst, tEOF, tExit, tDone, tPause []time.Duration
	for i := 0; i < warmup+b.cfg.thaw; {
		if err := ctx.Err(); err != nil {
			return err
		}
		d, pause, err := serveOnce(ctx, sp, fn)
		if _, ok := errors.AsType[pauseError](err); ok {
			// Freezing a container right after its start can fail (see
			// the report); the pool then makes another. So do we, up to
			// a point.
			b.res.InprocPauseFailures++
			if len(b.pauseErrs) < 3 {
				b.pauseErrs = append(b.pauseErrs, err.Error())
			}
			if b.res.InprocPauseFailures > max(5, b.cfg.thaw/5) {
				return fmt.Errorf("too many failed pauses: %w", err)
			}
			continue
		}
		if err != nil {
			return err
		}
		i++
		if i > warmup {
			tPause = append(tPause, pause)
			tThaw = append(tThaw, d[0])
			tFirst = append(tFirst, d[1])
			tEOF = append(tEOF, d[2])
			tExit = append(tExit, d[3])
			if d[4] > 0 {
				tDone = append(tDone, d[4])
			}
		}
	}
	b.res.InprocThawP50 = summarize(tThaw).p50
	b.res.InprocFirstByteP50 = summarize(tFirst).p50
	b.res.InprocStdoutEOFP50 = summarize(tEOF).p50
	b.res.InprocExitP50 = summarize(tExit).p50
	b.res.InprocDoneP50 = summarize(tDone).p50
	ps := summarize(tPause)
	b.res.InprocPauseP50, b.res.InprocPauseP99, b.res.InprocPauseMax = ps.p50, ps.p99, ps.max
	return nil
}

// waitReady waits, if the spawner offers it (Instance.WaitReady, being
// added in parallel), until the container's init waits for its frame: the
// moment the pool freezes it. Without it, a Pause right after Create can
// catch runc still exec'ing the init and stall in FREEZING.
func waitReady(ctx context.Context, inst *spawner.Instance) error {
	r, ok := any(inst).(interface{ WaitReady(context.Context) error })
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.WaitReady(ctx); err != nil {
		return fmt.Errorf("waiting for %s to be ready: %w", inst.ID, err)
	}
	return nil
}

// pauseError is a failed Instance.Pause of a just-started container.
type pauseError struct{ err error }

func (e pauseError) Error() string { return "pausing a just-started container: " + e.err.Error() }
func (e pauseError) Unwrap() error { return e.err }

// serveOnce makes a paused container as the pool does (create, wait until
// ready if the spawner can, then Pause; it returns the time of both), then serves one hello request from it as the
// handler does and returns the times from the thaw's start to: thaw done,
// first stdout byte, stdout EOF, containerd's exit seen, and the exit
// code known from the init (if the spawner has Instance.Done; else 0).
func serveOnce(ctx context.Context, sp *spawner.Spawner, fn *spawner.Function) (d [5]time.Duration, pause time.Duration, _ error) {
	inst, err := sp.Create(ctx, fn)
	if err != nil {
		return d, 0, fmt.Errorf("creating a container: %w", err)
	}
	defer inst.Destroy(context.Background())
	t0 := time.Now()
	if err := waitReady(ctx, inst); err != nil {
		return d, 0, err
	}
	if err := inst.Pause(); err != nil {
		return d, 0, pauseError{err}
	}
	pause = time.Since(t0)
	// Let the creation's after-effects (shim, runc) settle, as between
	// paced requests.
	time.Sleep(20 * time.Millisecond)
	go func() { _, _ = io.Copy(io.Discard, inst.Stderr()) }()

	t0 = time.Now()
	if err := inst.Thaw(); err != nil {
		return d, pause, err
	}
	d[0] = time.Since(t0)
	if err := inst.Begin([]string{"GATEWAY_INTERFACE=CGI/1.1", "REQUEST_METHOD=GET", "REQUEST_URI=/thaw"}); err != nil {
		return d, pause, err
	}
	stdinDone := make(chan struct{})
	go func() {
		_ = inst.CloseStdin(context.Background())
		close(stdinDone)
	}()
	buf := make([]byte, 32<<10)
	first := true
	for {
		n, err := inst.Stdout().Read(buf)
		if n > 0 && first {
			d[1] = time.Since(t0)
			first = false
		}
		if err != nil {
			break
		}
	}
	d[2] = time.Since(t0)
	if dn, ok := any(inst).(interface{ Done() <-chan struct{} }); ok {
		// The exit code as the init reports it (the handler waits for
		// this), before containerd's exit event.
		select {
		case <-dn.Done():
			d[4] = time.Since(t0)
		case <-time.After(10 * time.Second):
			return d, pause, errors.New("in-process serve: no exit record within 10s")
		}
	}
	select {
	case <-inst.Exited():
	case <-time.After(10 * time.Second):
		return d, pause, errors.New("in-process serve: no exit within 10s")
	}
	d[3] = time.Since(t0)
	<-stdinDone
	if code := inst.ExitStatus().Code; code != 0 {
		return d, pause, fmt.Errorf("in-process serve: exit code %d", code)
	}
	return d, pause, nil
}
