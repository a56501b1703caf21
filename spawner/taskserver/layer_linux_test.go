package taskserver

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/containerd/containerd/v2/core/mount"
)

// TestOverlayParts: the rootfs shapes containerd's overlay snapshotter
// hands out, taken apart into what the writable layer goes over.
func TestOverlayParts(t *testing.T) {
	for _, tc := range []struct {
		name        string
		m           mount.Mount
		ok          bool
		lower, root string
		rest        []string
	}{
		{
			name: "active snapshot",
			m: mount.Mount{Type: "overlay", Source: "overlay", Options: []string{
				"index=off", "workdir=/s/5/work", "upperdir=/s/5/fs", "lowerdir=/s/2/fs:/s/1/fs",
			}},
			ok: true, lower: "/s/2/fs:/s/1/fs", root: "/s/5/fs", rest: []string{"index=off"},
		},
		{
			name: "view of several layers",
			m: mount.Mount{Type: "overlay", Source: "overlay", Options: []string{
				"lowerdir=/s/3/fs:/s/2/fs:/s/1/fs", "index=off",
			}},
			ok: true, lower: "/s/3/fs:/s/2/fs:/s/1/fs", root: "/s/3/fs", rest: []string{"index=off"},
		},
		{
			name: "view of one layer",
			m:    mount.Mount{Type: "bind", Source: "/s/1/fs", Options: []string{"ro", "rbind"}},
			ok:   true, lower: "/s/1/fs", root: "/s/1/fs",
		},
		{
			name: "writable bind (one-layer active snapshot)",
			m:    mount.Mount{Type: "bind", Source: "/s/1/fs", Options: []string{"rw", "rbind"}},
		},
		{
			name: "id-mapped bind",
			m:    mount.Mount{Type: "bind", Source: "/s/1/fs", Options: []string{"uidmap=0:100000:65536", "ro", "rbind"}},
		},
		{
			name: "overlay without lower",
			m:    mount.Mount{Type: "overlay", Source: "overlay", Options: []string{"upperdir=/u", "workdir=/w"}},
		},
		{
			name: "other file system",
			m:    mount.Mount{Type: "ext4", Source: "/dev/vdb"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, ok := overlayParts(tc.m)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if o.lower != tc.lower || o.root != tc.root || !slices.Equal(o.rest, tc.rest) {
				t.Errorf("got lower %q root %q rest %q, want %q %q %q", o.lower, o.root, o.rest, tc.lower, tc.root, tc.rest)
			}
		})
	}
}

// TestIsLayerView: only read-only views of layers are shared among
// containers; an active snapshot, a writable or id-mapped bind or several
// mounts are not.
func TestIsLayerView(t *testing.T) {
	view := mount.Mount{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/s/2/fs:/s/1/fs"}}
	bind := mount.Mount{Type: "bind", Source: "/s/1/fs", Options: []string{"ro", "rbind"}}
	active := mount.Mount{Type: "overlay", Source: "overlay", Options: []string{
		"workdir=/s/5/work", "upperdir=/s/5/fs", "lowerdir=/s/1/fs",
	}}
	for _, tc := range []struct {
		name   string
		mounts []mount.Mount
		want   bool
	}{
		{"view of several layers", []mount.Mount{view}, true},
		{"view of one layer", []mount.Mount{bind}, true},
		{"active snapshot", []mount.Mount{active}, false},
		{"writable bind", []mount.Mount{{Type: "bind", Source: "/s/1/fs", Options: []string{"rw", "rbind"}}}, false},
		{"id-mapped bind", []mount.Mount{{Type: "bind", Source: "/s/1/fs", Options: []string{"uidmap=0:1:1", "ro", "rbind"}}}, false},
		{"two mounts", []mount.Mount{bind, bind}, false},
		{"none", nil, false},
	} {
		if got := IsLayerView(tc.mounts); got != tc.want {
			t.Errorf("%s: IsLayerView = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestBoundedLayerOverView mounts what boundedLayer makes of a read-only
// view of one layer: the container writes to its own tmpfs, the shared
// layer stays as it was, and a second container over the same view does
// not see the first one's file.
func TestBoundedLayerOverView(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (overlay and tmpfs mounts); the unit tests run as root on the CI machine")
	}
	base := t.TempDir()
	lower := filepath.Join(base, "layer")
	if err := os.MkdirAll(filepath.Join(lower, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lower, "etc", "image-file"), []byte("from the image"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{StateDir: filepath.Join(base, "state")}}
	view := []mount.Mount{{Type: "bind", Source: lower, Options: []string{"ro", "rbind"}}}
	var roots []string
	for _, id := range []string{"a", "b"} {
		tk := &task{id: id, disk: 8 << 20}
		ms, err := s.boundedLayer(tk, view)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = mount.UnmountAll(tk.layer, unix.MNT_DETACH) })
		root := filepath.Join(base, "rootfs-"+id)
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := mount.All(ms, root); err != nil {
			t.Fatalf("mounting %v: %v", ms, err)
		}
		t.Cleanup(func() { _ = mount.UnmountAll(root, unix.MNT_DETACH) })
		roots = append(roots, root)
	}
	if b, err := os.ReadFile(filepath.Join(roots[0], "etc", "image-file")); err != nil || string(b) != "from the image" {
		t.Fatalf("the image's file through the overlay: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(roots[0], "etc", "written"), []byte("by a"), 0o644); err != nil {
		t.Fatalf("writing in the container's rootfs: %v", err)
	}
	if _, err := os.Stat(filepath.Join(lower, "etc", "written")); !os.IsNotExist(err) {
		t.Errorf("the write reached the shared layer: %v", err)
	}
	if _, err := os.Stat(filepath.Join(roots[1], "etc", "written")); !os.IsNotExist(err) {
		t.Errorf("the second container sees the first one's file: %v", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Join(base, "state", "layers", "a"), &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Errorf("the writable layer is not a tmpfs (%v)", err)
	}
}
