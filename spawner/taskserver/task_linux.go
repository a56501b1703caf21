package taskserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
)

// cleanupTimeout bounds the removal of one container's runtime state.
const cleanupTimeout = 10 * time.Second

// task is one container: created by crun, its init a child of this process.
type task struct {
	id, ns, bundle        string
	stdin, stdout, stderr string
	rootfs                string // mounted by us; "" when containerd gave no mounts
	cgroup                string // the spec's cgroupsPath
	hooks                 bool   // the spec has OCI hooks: crun runs start and delete
	disk                  int64  // bound of the writable layer; 0: none
	layer                 string // the size-capped tmpfs holding the writable layer
	pid                   int
	created               time.Time

	mu      sync.Mutex
	started bool
	paused  bool
	exited  chan struct{}
	code    uint32
	exitAt  time.Time
}

func (t *task) status() tasktypes.Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-t.exited:
		return tasktypes.Status_STOPPED
	default:
	}
	switch {
	case t.paused:
		return tasktypes.Status_PAUSED
	case t.started:
		return tasktypes.Status_RUNNING
	}
	return tasktypes.Status_CREATED
}

func (t *task) exitStatus() (uint32, time.Time, bool) {
	select {
	case <-t.exited:
		return t.code, t.exitAt, true
	default:
		return 0, time.Time{}, false
	}
}

// create makes the container for r: rootfs mounted, stdio opened, `crun
// create` run. On error nothing of it is left.
func (s *Server) create(ctx context.Context, ns string, r *taskAPI.CreateTaskRequest) (_ *task, retErr error) {
	if r.Terminal {
		return nil, fmt.Errorf("terminal: %w", errdefs.ErrNotImplemented)
	}
	if r.Checkpoint != "" {
		return nil, fmt.Errorf("checkpoint: %w", errdefs.ErrNotImplemented)
	}
	t := &task{
		id: r.ID, ns: ns, bundle: r.Bundle, stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr,
		created: time.Now(), exited: make(chan struct{}),
	}
	// The ID is reserved while the container is made, and the task is
	// visible to other calls only once it has its init's pid: a Delete or
	// Kill racing a Create (containerd cleans up a Create whose caller left)
	// finds nothing rather than a task without a process.
	s.mu.Lock()
	_, exists := s.tasks[r.ID]
	if exists || s.creating[r.ID] {
		s.mu.Unlock()
		return nil, fmt.Errorf("task %s: %w", r.ID, errdefs.ErrAlreadyExists)
	}
	if s.creating == nil {
		s.creating = map[string]bool{}
	}
	s.creating[r.ID] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.creating, r.ID)
		if retErr == nil {
			s.tasks[r.ID] = t
		}
		s.mu.Unlock()
		if retErr != nil {
			s.cleanup(t)
		}
	}()

	t0 := time.Now()
	key, cached, hasSeccomp, err := s.prepareSpec(t, r.Bundle)
	if err != nil {
		return nil, fmt.Errorf("preparing spec of %s: %w", r.ID, err)
	}
	t1 := time.Now()
	if len(r.Rootfs) > 0 {
		rootfs := filepath.Join(r.Bundle, "rootfs")
		if err := os.MkdirAll(rootfs, 0o711); err != nil {
			return nil, err
		}
		// Set before mounting: a mount that fails half way is undone too.
		t.rootfs = rootfs
		mounts, err := s.boundedLayer(t, mount.FromProto(r.Rootfs))
		if err != nil {
			return nil, fmt.Errorf("bounding the writable layer of %s: %w", r.ID, err)
		}
		for i := range mounts {
			if mounts[i], err = s.idmapLowers(mounts[i]); err != nil {
				return nil, fmt.Errorf("id-mapping the rootfs of %s: %w", r.ID, err)
			}
		}
		if err := mount.All(mounts, rootfs); err != nil {
			return nil, fmt.Errorf("mounting rootfs of %s: %w", r.ID, err)
		}
	}
	stdio, err := openStdio(r.Stdin, r.Stdout, r.Stderr)
	if err != nil {
		return nil, fmt.Errorf("opening stdio of %s: %w", r.ID, err)
	}
	t2 := time.Now()
	pid, err := s.crun.create(ctx, r.ID, r.Bundle, stdio)
	if ce := s.logger.Check(zap.DebugLevel, "container created"); ce != nil {
		ce.Write(zap.String("container", r.ID), zap.Duration("took_mount", t1.Sub(t0)),
			zap.Duration("took_spec", t2.Sub(t1)), zap.Duration("took_crun", time.Since(t2)))
	}
	for _, f := range stdio {
		if f != nil {
			f.Close()
		}
	}
	if err != nil {
		return nil, err
	}
	if hasSeccomp && !cached {
		s.learnSeccomp(key, r.ID)
	}
	t.pid = pid
	go s.watch(t, s.reaper.wait(pid))
	return t, nil
}

// boundedLayer moves the writable layer of an overlay rootfs (its upper
// and work directories) onto a tmpfs of t.disk bytes and t.disk/16 KiB
// inodes, mounted under the server's state: a program that fills it gets ENOSPC, and
// its pages are charged to the container's memory cgroup, never to the
// host's disk. A read-only view of the image's layers (a bind mount of
// one layer, or an overlay without an upper directory: what containerd's
// overlay snapshotter gives for a View) gets a writable layer the same
// way, so that many containers can share one view of an image, each with
// its own upper directory and no snapshot of its own. Rootfs mounts of
// other shapes are returned as they are.
func (s *Server) boundedLayer(t *task, mounts []mount.Mount) ([]mount.Mount, error) {
	if t.disk <= 0 || len(mounts) != 1 {
		return mounts, nil
	}
	m, ok := overlayParts(mounts[0])
	if !ok {
		return mounts, nil
	}
	// In our own state, not in containerd's bundle: containerd's removal
	// of a bundle must never trip over our mount, and after a crash the
	// next server finds every layer here.
	layer := filepath.Join(s.cfg.StateDir, "layers", t.id)
	if err := os.MkdirAll(layer, 0o700); err != nil {
		return nil, err
	}
	inodes := max(t.disk/diskBytesPerInode, 1024)
	t.layer = layer // set before mounting: undone by cleanup whatever happens
	opts := fmt.Sprintf("size=%d,nr_inodes=%d,mode=0700", t.disk, inodes)
	if err := unix.Mount("tmpfs", layer, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return nil, fmt.Errorf("mounting tmpfs: %w", err)
	}
	newUpper, newWork := filepath.Join(layer, "upper"), filepath.Join(layer, "work")
	if err := os.Mkdir(newWork, 0o700); err != nil {
		return nil, err
	}
	if err := os.Mkdir(newUpper, 0o755); err != nil {
		return nil, err
	}
	// The new upper directory takes the mode and owner of the root
	// directory it covers: the snapshot's upper (made like the image's
	// root), or the topmost layer's root.
	if fi, err := os.Stat(m.root); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			_ = os.Chown(newUpper, int(st.Uid), int(st.Gid))
		}
		_ = os.Chmod(newUpper, fi.Mode().Perm())
	}
	options := append([]string{"workdir=" + newWork, "upperdir=" + newUpper, "lowerdir=" + m.lower}, m.rest...)
	return []mount.Mount{{Type: "overlay", Source: "overlay", Options: options}}, nil
}

// diskBytesPerInode sets the writable layer's inode bound (as spawner's).
const diskBytesPerInode = 16 << 10

// watch records the init's exit and reports it: the TaskExit event is
// queued before anyone waiting can go on to Delete, so events keep order.
func (s *Server) watch(t *task, ch <-chan unix.WaitStatus) {
	ws := <-ch
	t.mu.Lock()
	t.code = exitCode(ws)
	t.exitAt = time.Now()
	s.publishExit(t)
	close(t.exited)
	t.mu.Unlock()
}

// cleanup removes crun's state, the cgroup and the rootfs mount of t.
func (s *Server) cleanup(t *task) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if t.pid > 0 {
		if _, _, ok := t.exitStatus(); !ok {
			_ = unix.Kill(t.pid, unix.SIGKILL)
		}
	}
	if s.removeExited(t) {
		// Done without a crun process.
	} else if err := s.crun.delete(ctx, t.id, t.bundle); err != nil && !isGone(t.id, s.crun.root) {
		s.logger.Warn("removing container state", zap.String("container", t.id), zap.Error(err))
	}
	if t.rootfs != "" {
		if err := mount.UnmountAll(t.rootfs, unix.MNT_DETACH); err != nil {
			s.logger.Warn("unmounting rootfs", zap.String("container", t.id), zap.Error(err))
		}
	}
	if t.layer != "" {
		if err := mount.UnmountAll(t.layer, unix.MNT_DETACH); err != nil {
			s.logger.Warn("unmounting the writable layer", zap.String("container", t.id), zap.Error(err))
		} else {
			_ = os.Remove(t.layer)
		}
	}
}

// removeExited does what `crun delete` does for a container whose init has
// exited (and with it, its PID namespace): remove its cgroup in every
// hierarchy and crun's state. It reports false, having changed nothing it
// can't redo, when crun should do it instead.
func (s *Server) removeExited(t *task) bool {
	if _, _, ok := t.exitStatus(); !ok || t.hooks || !filepath.IsAbs(t.cgroup) || filepath.Clean(t.cgroup) == "/" {
		return false
	}
	for _, root := range s.cgroupRoots {
		dir := filepath.Join(root, t.cgroup)
		var err error
		for range 20 {
			if err = unix.Rmdir(dir); err == nil || err == unix.ENOENT {
				err = nil
				break
			}
			if err != unix.EBUSY {
				break
			}
			// The last processes are still on their way out.
			time.Sleep(time.Millisecond)
		}
		if err != nil {
			s.logger.Debug("removing cgroup; crun will", zap.String("cgroup", dir), zap.Error(err))
			return false
		}
	}
	if err := os.RemoveAll(filepath.Join(s.crun.root, t.id)); err != nil {
		return false
	}
	return true
}

// thaw unfreezes t's cgroup through the freezer files (v1 and v2), without
// a crun process. Failures are harmless: a cgroup that isn't frozen, or a
// hierarchy without a freezer.
func (s *Server) thaw(t *task) { s.thawCgroup(t.cgroup) }

// thawCgroup unfreezes cgroup (a cgroupsPath) in every hierarchy that has
// a freezer.
func (s *Server) thawCgroup(cgroup string) {
	if !filepath.IsAbs(cgroup) {
		return
	}
	for _, root := range s.cgroupRoots {
		dir := filepath.Join(root, cgroup)
		writeExisting(filepath.Join(dir, "freezer.state"), "THAWED")
		writeExisting(filepath.Join(dir, "cgroup.freeze"), "0")
	}
}

// writeExisting writes v to the file at path if it exists; it never
// creates one.
func writeExisting(path, v string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return
	}
	_, _ = f.WriteString(v)
	_ = f.Close()
}

func isGone(id, root string) bool {
	_, err := os.Stat(filepath.Join(root, id))
	return errors.Is(err, os.ErrNotExist)
}

// openStdio opens the FIFOs containerd's client made, to be the container's
// standard streams directly: no copying process sits in between. Each is
// opened non-blocking (a missing peer is an error, not a hang) and then
// switched to blocking for the program. No end of stdin is kept here once
// crun has created the container: the client's close is the program's EOF, which is
// why the spawner sends no CloseIO on the fast path.
func openStdio(stdin, stdout, stderr string) ([3]*os.File, error) {
	var files [3]*os.File
	paths := [3]string{stdin, stdout, stderr}
	for i, p := range paths {
		if p == "" {
			continue
		}
		flag := unix.O_WRONLY
		if i == 0 {
			flag = unix.O_RDONLY
		}
		fd, err := unix.Open(p, flag|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == unix.ENXIO && i > 0 {
			// No reader yet: keep one of our own so the writer never
			// gets EPIPE for it.
			fd, err = unix.Open(p, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		}
		if err == nil {
			err = unix.SetNonblock(fd, false)
		}
		if err != nil {
			if fd >= 0 {
				unix.Close(fd)
			}
			for _, f := range files {
				if f != nil {
					f.Close()
				}
			}
			return files, fmt.Errorf("%s: %w", p, err)
		}
		files[i] = os.NewFile(uintptr(fd), p)
	}
	return files, nil
}
