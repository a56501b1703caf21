package spawner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"

	"github.com/caddy-spawn/caddy-spawn/internal/initframe"
	"github.com/caddy-spawn/caddy-spawn/snapshots"
)

// teardownTimeout bounds how long removing one container may take.
const teardownTimeout = 15 * time.Second

// createTimeout bounds creating and starting one container.
const createTimeout = time.Minute

// nameRe follows containerd's identifier rules (no leading, trailing or
// doubled separators), lowercase only.
var nameRe = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

// ValidName reports whether name can be used as a function name in
// container IDs: lowercase letters and digits, separated by single '-', at
// most 40 characters.
func ValidName(name string) bool { return len(name) <= 40 && nameRe.MatchString(name) }

// Instance is one started, single-use container: its init is waiting for
// the request frame on stdin.
type Instance struct {
	ID string

	s         *Spawner
	fn        *Function
	container client.Container // nil on shared layers (see fastTask)
	task      taskOps
	dio       *cio.DirectIO
	created   time.Time

	layers *layerView // the shared rootfs view; nil: its own snapshot
	cgroup string     // the spec's Linux.CgroupsPath

	usageMu     sync.Mutex    // guards the fields below and the use of usage's descriptors
	cpuAtBegin  time.Duration // the cgroup's CPU time when the request was given (at Pause, or Begin; see Usage)
	usageMark   bool          // cpuAtBegin is taken
	usage       *usageFiles   // the cgroup's usage files, opened at the mark
	usageClosed bool          // Destroy closed them: no reopening

	// stateMu serializes freezing, thawing and killing: a SIGKILL sent
	// while the cgroup is FREEZING can leave it stuck there, and with it
	// the runc kill waiting on it.
	stateMu sync.Mutex
	freezer *freezer // found on first Pause
	frozen  atomic.Bool
	killed  bool

	exited    chan struct{}
	watching  bool // watchExit runs: exited will close
	status    client.ExitStatus
	token     string        // exit-record token sent in the frame
	stderr    io.Reader     // program stderr minus the exit record
	done      chan struct{} // closed when the exit code is known
	ready     chan struct{} // closed when the init waits for its frame
	doneOnce  sync.Once
	code      uint32
	stdinOnce sync.Once
	destroyed sync.Once
	holdsSlot bool // of the Spawner's MaxContainers, given back by Destroy
}

// ExitStatus is how a container's program ended.
type ExitStatus struct {
	Code     uint32
	ExitedAt time.Time
}

// Create makes a container for fn from its pinned image, with a fresh
// writable snapshot, and starts its task: on return the init waits for the
// request frame. On error nothing is left behind.
func (s *Spawner) Create(ctx context.Context, fn *Function) (_ *Instance, retErr error) {
	if err := fn.validate(); err != nil {
		return nil, err
	}
	if !s.begin() {
		return nil, ErrClosed
	}
	defer s.creating.Done()
	// Creation runs to completion (or its own timeout) even when the
	// caller gives up: cancelling containerd mid-way can leave a prepared
	// snapshot without its container. A caller that is gone by then gets
	// its error and the container is torn down.
	callerCtx := ctx
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx(ctx)), createTimeout)
	defer cancel()
	if err := s.slots.take(callerCtx); err != nil {
		return nil, err
	}
	slotHeld := true
	defer func() {
		if slotHeld {
			s.slots.release()
		}
	}()
	if err := callerCtx.Err(); err != nil {
		// The caller left while it waited: don't start a container for nobody.
		return nil, err
	}
	if fp := s.cfg.FastPath; fp != nil && !s.sandboxReady.Load() {
		if err := fp.EnsureSandbox(ctx, s.cfg.Client); err != nil {
			return nil, err
		}
		s.sandboxReady.Store(true)
	}
	id := "caddy-spawn-" + fn.Name + "-" + randHex(8)
	labels := fn.labels(s.cfg.Owner)
	s.hold(id)
	handedOff := false // to a pool, when the caller left (see handOffKey)
	defer func() {
		if retErr != nil && !handedOff {
			s.unhold(id)
		}
	}()

	cgroup := cgroupsPath(s.cfg.Namespace, id)
	img, spec := fn.Image.Image, client.WithNewSpec(s.specOpts(fn, fn.Name, cgroup)...)
	tmpl, known := s.template(fn)
	if tmpl != nil {
		img, spec = tmpl.image(img), tmpl.withSpec(cgroup)
	}
	opts := []client.NewContainerOpts{client.WithImage(fn.Image.Image)}
	view := s.sharedLayers(ctx, fn, tmpl)
	if view == nil {
		opts = append(opts, snapshots.WithWritable(s.cfg.Snapshotter, id, img, labels, fn.snapshotOpts()...))
	}
	opts = append(opts, s.withRuntime(), spec, client.WithContainerLabels(labels))
	t0 := time.Now()
	var (
		c   client.Container
		err error
	)
	if view != nil {
		err = s.createFastContainer(ctx, id, opts)
	} else {
		c, err = s.cfg.Client.NewContainer(ctx, id, opts...)
	}
	if err == nil && !known {
		if terr := s.learnTemplate(ctx, fn, c, cgroup); terr != nil {
			s.log.Warn("no spec template; this function's specs are generated per container",
				zap.String("route", fn.Name), zap.Error(terr))
		}
	}
	if err != nil {
		if view != nil {
			s.releaseLayers(view)
		}
		// Best effort: the snapshot may exist without its container.
		_ = snapshots.RemoveWritable(context.WithoutCancel(ctx), s.cfg.Client, s.cfg.Namespace, s.cfg.Snapshotter, id)
		if errdefs.IsUnavailable(err) || errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return nil, fmt.Errorf("creating container %s: %w", id, err)
	}
	inst := &Instance{
		ID: id, s: s, fn: fn, container: c, created: time.Now(),
		cgroup: cgroupsPath(s.cfg.Namespace, id), exited: make(chan struct{}),
		token: randHex(32), done: make(chan struct{}), ready: make(chan struct{}),
		layers: view,
	}
	s.track(inst)
	// From here the instance holds the slot: Destroy gives it back.
	inst.holdsSlot, slotHeld = true, false
	defer func() {
		if retErr != nil && !handedOff {
			inst.Destroy(context.WithoutCancel(ctx))
		}
	}()

	dio, err := openFIFOs(context.WithoutCancel(ctx), s.cfg.FIFODir, id)
	if err != nil {
		return nil, err
	}
	inst.dio = dio
	// Pump stderr from the start: the init's ready record arrives before
	// any request, and the exit record must be seen even if the caller
	// reads stderr late.
	filter := newExitFilter(dio.Stderr, inst.token,
		func() { close(inst.ready) },
		func(code int) { inst.finish(uint32(code)) })
	pr, pw := io.Pipe()
	inst.stderr = pr
	go func() {
		_, err := io.Copy(pw, filter)
		pw.CloseWithError(err)
		filter.Drain()
	}()

	t1 := time.Now()
	var task taskOps
	if view != nil {
		// A handle even on error: Destroy removes the task by ID.
		task, err = s.newFastTask(ctx, id, dio, view)
	} else {
		task, err = c.NewTask(ctx, func(string) (cio.IO, error) { return dio, nil }, s.taskOpts()...)
	}
	inst.task = task
	if err != nil {
		return nil, fmt.Errorf("creating task for %s: %w", id, err)
	}
	// Wait before Start, so the exit can't be missed; on a context that
	// outlives the request.
	exitCh, err := task.Wait(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("waiting on task %s: %w", id, err)
	}
	go inst.watchExit(exitCh)
	inst.watching = true
	t2 := time.Now()
	if err := task.Start(ctx); err != nil {
		return nil, fmt.Errorf("starting task %s: %w", id, err)
	}
	if err := callerCtx.Err(); err != nil {
		// The caller left while the container was made: someone else may
		// use it (a pool with room takes it); otherwise it is torn down.
		if handOff, ok := callerCtx.Value(handOffKey{}).(func(*Instance) bool); ok && handOff(inst) {
			handedOff = true
			return nil, fmt.Errorf("creating %s: caller gone; handed to the pool: %w", id, err)
		}
		return nil, fmt.Errorf("creating %s: caller gone: %w", id, err)
	}
	if ce := s.log.Check(zap.DebugLevel, "container started"); ce != nil {
		ce.Write(zap.String("container", id), zap.Duration("took_container", t1.Sub(t0)),
			zap.Duration("took_task", t2.Sub(t1)), zap.Duration("took_start", time.Since(t2)))
	}
	return inst, nil
}

// withRuntime puts the container on the fast path's task server, through
// our sandbox record, or on the configured shim.
func (s *Spawner) withRuntime() client.NewContainerOpts {
	if fp := s.cfg.FastPath; fp != nil {
		return func(ctx context.Context, c *client.Client, ctr *containers.Container) error {
			ctr.Runtime = containers.RuntimeInfo{Name: fp.Runtime()}
			ctr.SandboxID = SandboxID
			return nil
		}
	}
	var runtimeOpts any
	if s.cfg.RuncBinary != "" {
		runtimeOpts = &options.Options{BinaryName: s.cfg.RuncBinary}
	}
	return client.WithRuntime(s.cfg.Runtime, runtimeOpts)
}

// taskOpts sends the task to the fast path's task server, if any.
func (s *Spawner) taskOpts() []client.NewTaskOpts {
	if fp := s.cfg.FastPath; fp != nil {
		return []client.NewTaskOpts{client.WithTaskAPIEndpoint(fp.Endpoint(), 3)}
	}
	return nil
}

// sharedLayers is the view of fn's image layers its container shares with
// others, or nil when it gets a writable snapshot of its own: on the stock
// path (the runc shim does not add a writable layer), in a user namespace
// (its layers are id-mapped per container), before fn's first container
// (which learns the template, with the image's layer chain) or when the
// view can't be made.
func (s *Spawner) sharedLayers(ctx context.Context, fn *Function, tmpl *specTemplate) *layerView {
	if s.cfg.FastPath == nil || tmpl == nil || fn.Userns != nil {
		return nil
	}
	v, err := s.acquireLayers(ctx, tmpl.diffIDs)
	if err != nil {
		if !errors.Is(err, errViewsUnsupported) || !s.viewsWarned.Swap(true) {
			s.log.Warn("no shared layer view; the container gets a snapshot of its own",
				zap.String("route", fn.Name), zap.Error(err))
		}
		return nil
	}
	return v
}

type handOffKey struct{}

// WithHandOff gives Create somewhere to put a container whose caller left
// while it was made: take returns true if it took the container (a pool
// with room), else Create tears it down.
func WithHandOff(ctx context.Context, take func(*Instance) bool) context.Context {
	return context.WithValue(ctx, handOffKey{}, take)
}

// watchExit waits for the task's exit. containerd going away breaks the
// wait without the task having exited — it runs on under its shim or our
// task server, and containerd reconnects to it when it is back — so then
// the wait is made again, until containerd answers or the Spawner closes.
func (i *Instance) watchExit(ch <-chan client.ExitStatus) {
	backoff := 100 * time.Millisecond
	for {
		st := <-ch
		if err := st.Error(); err != nil && isUnavailable(err) {
			if next := i.waitAgain(&backoff); next != nil {
				ch = next
				continue
			}
		}
		i.status = st
		close(i.exited)
		i.finish(st.ExitCode())
		return
	}
}

// waitAgain makes the wait again once containerd answers; nil when the
// Spawner closes first or containerd no longer knows the task.
func (i *Instance) waitAgain(backoff *time.Duration) <-chan client.ExitStatus {
	for {
		select {
		case <-i.s.stop:
			return nil
		case <-time.After(*backoff):
		}
		*backoff = min(*backoff*2, 2*time.Second)
		ch, err := i.task.Wait(i.s.ctx(context.Background()))
		if err == nil {
			return ch
		}
		if !isUnavailable(err) {
			return nil
		}
	}
}

// isUnavailable reports whether err says containerd could not be reached.
func isUnavailable(err error) bool {
	return errdefs.IsUnavailable(err) || status.Code(err) == codes.Unavailable
}

// cgroupsPath is the cgroup of a container: "/<namespace>/<id>", as
// containerd's default, but set explicitly so the freezer can find it.
func cgroupsPath(ns, id string) string { return "/" + ns + "/" + id }

// WaitReady waits until the init has started and waits for its frame, the
// only moment a container may be frozen: freezing it while runc is still
// exec'ing the init can leave the cgroup stuck in FREEZING.
func (i *Instance) WaitReady(ctx context.Context) error {
	select {
	case <-i.ready:
		return nil
	case <-i.exited:
		return fmt.Errorf("container %s exited before its init was ready", i.ID)
	case <-ctx.Done():
		return fmt.Errorf("waiting for the init of %s: %w", i.ID, ctx.Err())
	}
}

// Pause freezes the started container (its init waits for the frame) so an
// idle pooled container costs no CPU: not even the Go runtime's background
// wake-ups of our init.
func (i *Instance) Pause() error {
	i.stateMu.Lock()
	defer i.stateMu.Unlock()
	if i.killed {
		return fmt.Errorf("pausing %s: already killed", i.ID)
	}
	if i.freezer == nil {
		f, err := newFreezer(i.cgroup)
		if err != nil {
			return err
		}
		i.freezer = f
	}
	i.frozen.Store(true)
	if err := i.freezer.freeze(); err != nil {
		// Never leave a half-frozen cgroup behind.
		if terr := i.freezer.thaw(); terr == nil {
			i.frozen.Store(false)
		}
		return err
	}
	// Nothing in the cgroup runs until the thaw: its usage now is its
	// usage at Begin, read here rather than on the request's path.
	i.markUsageStart()
	return nil
}

// Thaw lets a paused container run again; ~0.1 ms, no runc exec.
func (i *Instance) Thaw() error {
	i.stateMu.Lock()
	defer i.stateMu.Unlock()
	return i.thawLocked()
}

func (i *Instance) thawLocked() error {
	if !i.frozen.Load() {
		return nil
	}
	if err := i.freezer.thaw(); err != nil {
		return err
	}
	i.frozen.Store(false)
	return nil
}

// OOMKilled reports whether the kernel's OOM killer killed a process of
// the container (its memory cgroup's oom_kill counter). Call it before
// Destroy, which removes the cgroup.
func (i *Instance) OOMKilled() bool { return oomKilled(i.cgroup) }

// Created returns when the container was created.
func (i *Instance) Created() time.Time { return i.created }

// Function returns the function the instance was made for.
func (i *Instance) Function() *Function { return i.fn }

// Begin sends the request's environment to the init, which then starts the
// program. Call it once, before writing the body.
//
// A claimed pooled container is still frozen here (its usage baseline was
// taken at Pause). Begin writes the frame first and thaws after, so the
// init's read returns the moment it runs again. While frozen it writes at
// most frozenWriteMax bytes, which an empty pipe always takes without
// blocking; the rest follows the thaw.
func (i *Instance) Begin(env []string) error {
	env = append(slices.Clip(env), exitTokenKey+"="+i.token)
	frame, err := initframe.Encode(env)
	if err != nil {
		return fmt.Errorf("encoding request frame for %s: %w", i.ID, err)
	}
	i.markUsageStart()
	i.stateMu.Lock()
	if i.frozen.Load() {
		n := min(len(frame), frozenWriteMax)
		if _, err = i.dio.Stdin.Write(frame[:n]); err == nil {
			err = i.thawLocked()
		}
		frame = frame[n:]
	}
	i.stateMu.Unlock()
	if err == nil && len(frame) > 0 {
		// Not under stateMu: an init that does not read must not keep Kill
		// from ending it.
		_, err = i.dio.Stdin.Write(frame)
	}
	if err != nil {
		return fmt.Errorf("writing request frame to %s: %w", i.ID, err)
	}
	return nil
}

// frozenWriteMax is what Begin writes to a frozen container's stdin: one
// page, the least capacity Linux gives a pipe (when a user is over
// pipe-user-pages-soft), so the write can't block on the frozen reader.
const frozenWriteMax = 4096

// Claim readies a pooled container for its request (see Pooled): there is
// nothing to do before Begin, which thaws it. (The pool has just checked
// that it did not exit.)
func (i *Instance) Claim() error { return nil }

// Stdin is the program's standard input; call CloseStdin at the end.
func (i *Instance) Stdin() io.Writer { return i.dio.Stdin }

// CloseStdin closes the program's standard input, so it sees EOF. With a
// shim, closing our end of the FIFO is not enough: the shim holds the
// other end open until it is told to close it. The fast path's task server
// holds none (the container reads the FIFO itself), so there our close is
// all it takes, and no call goes to containerd and the task server while
// the program runs.
func (i *Instance) CloseStdin(ctx context.Context) error {
	var err error
	i.stdinOnce.Do(func() {
		_ = i.dio.Stdin.Close()
		if i.s.cfg.FastPath != nil {
			return
		}
		select {
		case <-i.exited:
			return
		default:
		}
		err = i.task.CloseIO(i.s.ctx(ctx), client.WithStdinCloser)
		if err != nil && (errdefs.IsNotFound(err) || isExitedErr(i)) {
			err = nil
		}
	})
	if err != nil {
		return fmt.Errorf("closing stdin of %s: %w", i.ID, err)
	}
	return nil
}

func isExitedErr(i *Instance) bool {
	select {
	case <-i.exited:
		return true
	default:
		return false
	}
}

// Stdout is the program's standard output; it ends when the program exits.
func (i *Instance) Stdout() io.Reader { return i.dio.Stdout }

// Stderr is the program's standard error. Read it: the init's exit record
// travels on it and makes Done fire early (see Done).
func (i *Instance) Stderr() io.Reader { return i.stderr }

// exitTokenKey switches the init to supervisor mode (cmd/spawn-init).
const exitTokenKey = "SPAWN_EXIT_TOKEN"

// Done is closed once the program's exit code is known: from the init's
// exit record on stderr (as soon as the program exits), or from
// containerd's exit event (~2 ms later), whichever comes first.
func (i *Instance) Done() <-chan struct{} { return i.done }

// ExitCode is the program's exit code (128+n for signal n); valid after
// Done is closed.
func (i *Instance) ExitCode() uint32 { return i.code }

func (i *Instance) finish(code uint32) {
	i.doneOnce.Do(func() {
		i.code = code
		close(i.done)
	})
}

// Exited is closed once the program has exited (or was killed).
func (i *Instance) Exited() <-chan struct{} { return i.exited }

// ExitStatus returns the exit status; valid after Exited is closed.
func (i *Instance) ExitStatus() ExitStatus {
	return ExitStatus{Code: i.status.ExitCode(), ExitedAt: i.status.ExitTime()}
}

// Kill kills the container's processes now. It is safe to call at any time
// and more than once.
func (i *Instance) Kill(ctx context.Context) {
	if i.task == nil {
		return
	}
	select {
	case <-i.exited:
		return
	default:
	}
	i.stateMu.Lock()
	defer i.stateMu.Unlock()
	if i.killed {
		return
	}
	// A frozen task can't act on a signal; thaw it first.
	if err := i.thawLocked(); err != nil {
		i.s.log.Warn("thawing before kill", zap.String("container", i.ID), zap.Error(err))
	}
	// Bounded, whatever the caller's context: a containerd or task server
	// that does not answer must not hold the request (and stateMu) forever.
	// Only a kill that was delivered counts; a failed one is tried again by
	// the next Kill (Destroy's, at the latest).
	ctx, cancel := context.WithTimeout(i.s.ctx(context.WithoutCancel(ctx)), killTimeout)
	defer cancel()
	err := i.task.Kill(ctx, syscall.SIGKILL)
	if err != nil && !errdefs.IsNotFound(err) {
		i.s.log.Warn("killing container", zap.String("container", i.ID), zap.Error(err))
		return
	}
	i.killed = true
}

// killTimeout bounds one Kill call to containerd.
const killTimeout = 5 * time.Second

// Destroy kills the task if still running and removes task, container, its
// snapshot and FIFOs. It uses its own time budget, never the request's.
func (i *Instance) Destroy(ctx context.Context) {
	i.destroyed.Do(func() {
		defer i.s.untrack(i)
		if i.holdsSlot {
			defer i.s.slots.release()
		}
		ctx, cancel := context.WithTimeout(i.s.ctx(context.WithoutCancel(ctx)), teardownTimeout)
		defer cancel()
		start := time.Now()
		taskLeft := false
		if i.task != nil {
			i.Kill(ctx)
			// The shim reports a killed task's exit only once it has copied
			// its output, and it keeps a read end of the FIFO itself, so
			// closing ours would not unblock it: drain what nobody reads.
			if i.dio != nil {
				go func() { _, _ = io.Copy(io.Discard, i.dio.Stdout) }()
			}
			if i.watching {
				select {
				case <-i.exited:
				case <-ctx.Done():
				}
			}
			if _, err := i.task.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
				i.s.log.Warn("deleting task", zap.String("container", i.ID), zap.Error(err))
				if i.container == nil {
					// containerd's container service deletes a record whose
					// task lives on (the client's Container.Delete refused
					// to): keep the record for the janitor, which kills and
					// deletes both.
					taskLeft = true
				}
			}
		}
		if i.dio != nil {
			i.dio.Cancel()
			_ = i.dio.Close()
		}
		i.stateMu.Lock()
		if i.freezer != nil {
			i.freezer.close()
		}
		i.stateMu.Unlock()
		i.closeUsage()
		if taskLeft {
			i.s.kickReap()
		} else if err := i.deleteContainer(ctx); err != nil && !errdefs.IsNotFound(err) {
			// Left for the janitor, which retries once containerd answers.
			i.s.log.Warn("deleting container; will retry", zap.String("container", i.ID), zap.Error(err))
			i.s.kickReap()
		}
		if i.layers != nil {
			i.s.releaseLayers(i.layers)
		}
		i.s.unhold(i.ID)
		if ce := i.s.log.Check(zap.DebugLevel, "container removed"); ce != nil {
			ce.Write(zap.String("container", i.ID), zap.Duration("took", time.Since(start)))
		}
	})
}

// deleteContainer removes the container record, and its writable
// snapshot if it has one.
func (i *Instance) deleteContainer(ctx context.Context) error {
	if i.container == nil {
		return i.s.cfg.Client.ContainerService().Delete(ctx, i.ID)
	}
	return i.container.Delete(ctx, client.WithSnapshotCleanup)
}

// Release tears the instance down in the background, off the request's
// critical path, starting after the given delay. Drain waits for all
// releases, delays included.
func (s *Spawner) Release(i *Instance, after time.Duration) {
	s.wg.Go(func() {
		if after > 0 {
			time.Sleep(after)
		}
		i.Destroy(context.Background())
	})
}

// Drain waits until all released instances are gone, or ctx ends.
func (s *Spawner) Drain(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
