package taskserver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/containerd/containerd/v2/core/mount"
)

// A rootfs for a container in a user namespace comes from containerd's
// overlay snapshotter with "uidmap=" and "gidmap=" options: its lower
// layers are to be seen through id-mapped mounts, so that files the image
// has as root's are the container's root's. containerd's own mount helper
// makes those mounts afresh for every container, and to do so forks a
// process in a new user namespace each time — a child our reaper would take
// for its own. The task server instead keeps, for each mapping, one user
// namespace and one id-mapped, read-only view of the directory holding the
// layers, made once and shared by every container with that mapping: the
// per-container cost is rewriting the lowerdir paths.

// idmaps holds the user namespaces and id-mapped views of one server.
type idmaps struct {
	mu     sync.Mutex
	userns map[string]*os.File // by "uidmap|gidmap"
	views  map[viewKey]string  // mount point of each view
}

type viewKey struct{ maps, dir string }

// idmapDir is where the views are mounted, in the server's state.
func (s *Server) idmapDir() string { return filepath.Join(s.cfg.StateDir, "idmap") }

// idmapLowers returns m with its uidmap/gidmap options taken off and its
// lower layers replaced by their id-mapped views. A mount without those
// options is returned as it is.
func (s *Server) idmapLowers(m mount.Mount) (mount.Mount, error) {
	uidmap, gidmap, rest := takeIDMapOptions(m.Options)
	if uidmap == "" && gidmap == "" {
		return m, nil
	}
	if uidmap == "" || gidmap == "" {
		return m, errors.New("rootfs has a uid or a gid mapping but not both")
	}
	if m.Type != "overlay" {
		return m, fmt.Errorf("id-mapped %s rootfs: only overlay is supported", m.Type)
	}
	idx, lowers := -1, []string(nil)
	for i, o := range rest {
		if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
			idx, lowers = i, strings.Split(v, ":")
		}
	}
	if idx < 0 {
		return m, errors.New("id-mapped overlay rootfs without lower layers")
	}
	// The directory holding the layers' directories (for the overlay
	// snapshotter, its "snapshots"), so every image shares one view per
	// mapping, single-layer ones too.
	parents := make([]string, len(lowers))
	for i, l := range lowers {
		lowers[i] = filepath.Clean(l)
		parents[i] = filepath.Dir(lowers[i])
	}
	dir := commonDir(parents)
	if dir == "/" || dir == "" {
		return m, fmt.Errorf("lower layers %q share no directory", lowers)
	}
	view, err := s.idmapView(uidmap, gidmap, dir)
	if err != nil {
		return m, err
	}
	mapped := make([]string, len(lowers))
	for i, l := range lowers {
		mapped[i] = filepath.Join(view, strings.TrimPrefix(l, dir))
	}
	rest[idx] = "lowerdir=" + strings.Join(mapped, ":")
	m.Options = rest
	return m, nil
}

// takeIDMapOptions splits the uidmap= and gidmap= options off opts.
func takeIDMapOptions(opts []string) (uidmap, gidmap string, rest []string) {
	rest = make([]string, 0, len(opts))
	for _, o := range opts {
		if v, ok := strings.CutPrefix(o, "uidmap="); ok {
			uidmap = v
		} else if v, ok := strings.CutPrefix(o, "gidmap="); ok {
			gidmap = v
		} else {
			rest = append(rest, o)
		}
	}
	return uidmap, gidmap, rest
}

// commonDir is the deepest directory holding every path of paths.
func commonDir(paths []string) string {
	if len(paths) == 0 {
		return ""
	}
	dir := filepath.Dir(filepath.Clean(paths[0]))
	for _, p := range paths[1:] {
		p = filepath.Clean(p)
		for dir != "/" && !strings.HasPrefix(p, dir+"/") {
			dir = filepath.Dir(dir)
		}
	}
	return dir
}

// idmapView returns the read-only view of dir id-mapped by the mapping,
// making it on first use.
func (s *Server) idmapView(uidmap, gidmap, dir string) (string, error) {
	maps := uidmap + "|" + gidmap
	key := viewKey{maps: maps, dir: dir}
	s.idmap.mu.Lock()
	defer s.idmap.mu.Unlock()
	if v, ok := s.idmap.views[key]; ok {
		return v, nil
	}
	ns, ok := s.idmap.userns[maps]
	if !ok {
		f, err := s.newUserns(uidmap, gidmap)
		if err != nil {
			return "", fmt.Errorf("making a user namespace for %s: %w", maps, err)
		}
		if s.idmap.userns == nil {
			s.idmap.userns = map[string]*os.File{}
		}
		s.idmap.userns[maps], ns = f, f
	}
	if err := os.MkdirAll(s.idmapDir(), 0o700); err != nil {
		return "", fmt.Errorf("creating the views' directory: %w", err)
	}
	target, err := os.MkdirTemp(s.idmapDir(), "view-")
	if err != nil {
		return "", fmt.Errorf("creating a view's mount point: %w", err)
	}
	if err := mount.IDMapMountWithAttrs(dir, target, int(ns.Fd()), unix.MOUNT_ATTR_RDONLY, 0); err != nil {
		_ = os.Remove(target)
		return "", fmt.Errorf("id-mapping %s: %w", dir, err)
	}
	if s.idmap.views == nil {
		s.idmap.views = map[viewKey]string{}
	}
	s.idmap.views[key] = target
	s.logger.Info("id-mapped layer view made", zap.String("layers", dir), zap.String("uidmap", uidmap),
		zap.String("view", target))
	return target, nil
}

// newUserns returns a user namespace with the mappings, held by an open
// file: it is made for a child that stops at once (traced, before it
// executes anything), which is then killed and reaped.
func (s *Server) newUserns(uidmap, gidmap string) (*os.File, error) {
	uids, err := parseIDMaps(uidmap)
	if err != nil {
		return nil, err
	}
	gids, err := parseIDMaps(gidmap)
	if err != nil {
		return nil, err
	}
	pid, exited, err := s.reaper.start("/proc/self/exe", []string{"caddy-spawn[userns]"}, &os.ProcAttr{
		Sys: &syscall.SysProcAttr{
			Cloneflags:  unix.CLONE_NEWUSER,
			UidMappings: uids,
			GidMappings: gids,
			// Stopped at its execve: nothing of it runs.
			Ptrace:    true,
			Pdeathsig: syscall.SIGKILL,
		},
	})
	if err != nil {
		return nil, err
	}
	f, openErr := os.Open(fmt.Sprintf("/proc/%d/ns/user", pid))
	// It can't exit by itself (it is stopped): if it has, someone killed
	// it, and its PID may be another process's by now.
	select {
	case <-exited:
		if f != nil {
			f.Close()
		}
		return nil, fmt.Errorf("the user namespace's process %d exited before its namespace was taken", pid)
	default:
	}
	_ = unix.Kill(pid, unix.SIGKILL)
	select {
	case <-exited:
	case <-s.stop: // the reaper stopped with the server
	}
	if openErr != nil {
		return nil, openErr
	}
	return f, nil
}

// parseIDMaps parses containerd's "ctr:host:size[,ctr:host:size…]".
func parseIDMaps(s string) ([]syscall.SysProcIDMap, error) {
	var out []syscall.SysProcIDMap
	for part := range strings.SplitSeq(s, ",") {
		f := strings.Split(part, ":")
		if len(f) != 3 {
			return nil, fmt.Errorf("id mapping %q: want container:host:size", part)
		}
		var n [3]int
		for i, v := range f {
			x, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("id mapping %q: %w", part, err)
			}
			n[i] = int(x)
		}
		out = append(out, syscall.SysProcIDMap{ContainerID: n[0], HostID: n[1], Size: n[2]})
	}
	return out, nil
}

// closeIDMaps lets go of the user namespaces and detaches the views;
// overlays using them keep their layers.
func (s *Server) closeIDMaps() {
	s.idmap.mu.Lock()
	defer s.idmap.mu.Unlock()
	for _, f := range s.idmap.userns {
		_ = f.Close()
	}
	s.idmap.userns = nil
	s.idmap.views = nil
	s.sweepIDMaps()
}

// sweepIDMaps detaches and removes every view under the state directory.
func (s *Server) sweepIDMaps() {
	s.sweepMounts(s.idmapDir(), "unmounting an id-mapped layer view")
}
