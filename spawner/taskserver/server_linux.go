package taskserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/sys/mountinfo"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/ttrpc"
)

// Config is what a task server needs.
type Config struct {
	// Socket is the unix socket the task API is served on.
	Socket string
	// StateDir holds crun's state (exec FIFOs, status files). It should be
	// on tmpfs: nothing in it outlives the server's containers.
	StateDir string
	// Crun is the path of the crun binary.
	Crun string
	// Events is containerd's ttrpc address ("<socket>.ttrpc"), where task
	// events are forwarded. Empty: no events.
	Events string
	// Logger receives the server's logs.
	Logger *zap.Logger
}

// Server serves containerd's task API for many containers at once.
type Server struct {
	cfg     Config
	crun    *crun
	reaper  *reaper
	events  *publisher
	seccomp seccompCache
	idmap   idmaps
	logger  *zap.Logger
	// cgroupRoots are the mount points of every cgroup hierarchy, where
	// crun makes a container's cgroup.
	cgroupRoots []string

	mu       sync.Mutex
	tasks    map[string]*task // created: each has its init's pid
	creating map[string]bool  // IDs being created

	stop     chan struct{}
	stopOnce sync.Once
	ttrpc    *ttrpc.Server
}

// New checks that this host can run the server's containers and prepares
// it. It makes this process a child subreaper: the inits crun forks are
// reparented to it, and it reaps them.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if err := CheckHost(cfg.Crun); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("becoming a child subreaper: %w", err)
	}
	roots, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	r := newReaper()
	s := &Server{
		cgroupRoots: roots,
		cfg:         cfg,
		crun:        &crun{binary: cfg.Crun, root: filepath.Join(cfg.StateDir, "crun"), reaper: r},
		reaper:      r,
		logger:      cfg.Logger,
		tasks:       map[string]*task{},
		creating:    map[string]bool{},
		stop:        make(chan struct{}),
	}
	if cfg.Events != "" {
		s.events = newPublisher(cfg.Events, cfg.Logger)
	}
	go s.reaper.run(s.stop)
	return s, nil
}

// Serve serves the task API on cfg.Socket until ctx is done or Close is
// called. The socket file is replaced if it exists.
func (s *Server) Serve(ctx context.Context) error {
	_ = os.Remove(s.cfg.Socket)
	if err := os.MkdirAll(filepath.Dir(s.cfg.Socket), 0o700); err != nil {
		return err
	}
	l, err := net.Listen("unix", s.cfg.Socket)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.cfg.Socket, err)
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		l.Close()
		return err
	}
	s.mu.Lock()
	s.ttrpc = srv
	s.mu.Unlock()
	taskAPI.RegisterTTRPCTaskService(srv, &service{s: s})
	if s.events != nil {
		go s.events.run(s.stop)
	}
	go func() {
		select {
		case <-ctx.Done():
		case <-s.stop:
		}
		s.Close()
	}()
	err = srv.Serve(context.Background(), l)
	// Serve returns as soon as Shutdown has closed the listener, while
	// Close may still be detaching the id-mapped views: wait for it (Once
	// blocks until the first call is done), or the process exits with the
	// views still mounted (seen: TestUserns, a view left after a clean stop).
	s.Close()
	if errors.Is(err, ttrpc.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops serving. Containers are left as they are: the spawn app's
// sweep owns their removal.
func (s *Server) Close() {
	s.stopOnce.Do(func() {
		close(s.stop)
		s.mu.Lock()
		srv := s.ttrpc
		s.mu.Unlock()
		if srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
			_ = srv.Close()
		}
		// After the last create: no view is made after this.
		s.closeIDMaps()
	})
}

func (s *Server) get(id string) (*task, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tasks[id]
	return t, ok
}

// CheckHost fails, with the reason, when crun cannot run containers here.
func CheckHost(crunPath string) error {
	if _, err := os.Stat(crunPath); err != nil {
		return fmt.Errorf("%w: crun not found: %w", ErrUnsupported, err)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root", ErrUnsupported)
	}
	// crun refuses a hybrid host whose unified hierarchy holds a
	// controller (hugetlb, typically) that has no v1 hierarchy.
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err == nil && st.Type != unix.CGROUP2_SUPER_MAGIC {
		b, err := os.ReadFile("/sys/fs/cgroup/unified/cgroup.controllers")
		if err == nil && len(b) > 0 && string(b) != "\n" {
			return fmt.Errorf("%w: cgroup v1 hybrid host with controllers on the unified hierarchy (%s); crun needs them on v1 or a pure cgroup v2 host",
				ErrUnsupported, trimNL(b))
		}
	}
	return nil
}

func trimNL(b []byte) string {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return string(b)
}

// SweepLeftovers removes the containers a previous server of the same state
// directory left behind (it was killed, or Caddy was): each is killed and
// deleted by crun, and its rootfs unmounted. containerd's records of them
// are the spawn app's sweep's.
func (s *Server) SweepLeftovers() {
	entries, err := os.ReadDir(s.crun.root)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		id := e.Name()
		var st struct {
			Pid    int    `json:"pid"`
			Bundle string `json:"bundle"`
			Cgroup string `json:"cgroup-path"`
		}
		if b, err := os.ReadFile(filepath.Join(s.crun.root, id, "status")); err == nil {
			_ = json.Unmarshal(b, &st)
		}
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		err := s.crun.run(ctx, filepath.Join(s.cfg.StateDir, "sweep.log"), [3]*os.File{}, "delete", "--force", id)
		cancel()
		if err != nil {
			// crun could not: kill what is in the container's cgroups
			// ourselves before forgetting it.
			killed := s.killCgroup(st.Cgroup)
			s.logger.Warn("crun could not remove a leftover container; killed its processes",
				zap.String("container", id), zap.Int("killed", killed), zap.Error(err))
			t := &task{id: id, cgroup: st.Cgroup, exited: make(chan struct{})}
			close(t.exited)
			if !s.removeExited(t) {
				s.logger.Warn("leftover container's cgroups remain", zap.String("container", id))
			}
			_ = os.RemoveAll(filepath.Join(s.crun.root, id))
		} else {
			s.logger.Info("removed leftover container", zap.String("container", id))
		}
		if st.Bundle != "" {
			_ = mount.UnmountAll(filepath.Join(st.Bundle, "rootfs"), unix.MNT_DETACH)
		}
	}
	s.sweepLayers()
	s.sweepIDMaps()
}

// sweepLayers unmounts and removes the writable layers a previous server
// left (after its containers' rootfs mounts are gone).
func (s *Server) sweepLayers() {
	s.sweepMounts(filepath.Join(s.cfg.StateDir, "layers"), "unmounting a leftover writable layer")
}

// sweepMounts detaches everything mounted on the entries of dir and
// removes them; one it can't unmount is logged with msg and kept.
func (s *Server) sweepMounts(dir, msg string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if err := mount.UnmountAll(p, unix.MNT_DETACH); err != nil {
			s.logger.Warn(msg, zap.String("path", p), zap.Error(err))
			continue
		}
		_ = os.Remove(p)
	}
}

// killCgroup SIGKILLs every process in cgroup (a cgroupsPath) in every
// hierarchy, then thaws it so frozen ones act on the signal, and returns
// how many it signalled.
func (s *Server) killCgroup(cgroup string) int {
	if !filepath.IsAbs(cgroup) || filepath.Clean(cgroup) == "/" {
		return 0
	}
	n := 0
	for _, root := range s.cgroupRoots {
		dir := filepath.Join(root, cgroup)
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			continue
		}
		for f := range strings.FieldsSeq(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
				if unix.Kill(pid, unix.SIGKILL) == nil {
					n++
				}
			}
		}
	}
	s.thawCgroup(cgroup)
	return n
}

// cgroupMounts lists the mount points of the cgroup hierarchies (v1 and v2).
func cgroupMounts() ([]string, error) {
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	roots := make([]string, 0, len(mounts))
	for _, m := range mounts {
		roots = append(roots, m.Mountpoint)
	}
	return roots, nil
}
