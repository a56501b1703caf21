package spawner

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func fsType(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Type
}

// TestStateTmpfs mounts a state tmpfs on a disk directory, adopts it again
// as a restarted process would, keeps it while something is mounted under
// it, and leaves a directory on the host's own tmpfs alone.
func TestStateTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (mount(2)); the unit tests run as root on the CI machine")
	}
	base, err := os.MkdirTemp("/var/tmp", "statetmpfs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = unix.Unmount(filepath.Join(base, "state", "inner"), unix.MNT_DETACH)
		_ = unix.Unmount(filepath.Join(base, "state"), unix.MNT_DETACH)
		_ = os.RemoveAll(base)
	})
	if fsType(t, base) == unix.TMPFS_MAGIC {
		t.Fatalf("%s is already a tmpfs: the test needs a disk directory", base)
	}
	dir := filepath.Join(base, "state")

	ours, err := MountStateTmpfs(dir)
	if err != nil || !ours {
		t.Fatalf("MountStateTmpfs(%s) = %v, %v; want a tmpfs of ours", dir, ours, err)
	}
	if fsType(t, dir) != unix.TMPFS_MAGIC {
		t.Fatalf("%s is not a tmpfs after MountStateTmpfs", dir)
	}
	if err := os.WriteFile(filepath.Join(dir, "marker"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A second start (after a crash) finds its own tmpfs and keeps its
	// contents: it mounts nothing over it.
	ours, err = MountStateTmpfs(dir)
	if err != nil || !ours {
		t.Fatalf("second MountStateTmpfs = %v, %v; want our tmpfs adopted", ours, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "marker")); err != nil {
		t.Fatalf("adopting the tmpfs lost its contents: %v", err)
	}

	// Something mounted under it (a crashed task server's rootfs): kept.
	inner := filepath.Join(dir, "inner")
	if err := os.Mkdir(inner, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", inner, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	if err := UnmountStateTmpfs(dir); err == nil || !strings.Contains(err.Error(), inner) {
		t.Fatalf("UnmountStateTmpfs with %s mounted under it = %v, want an error naming it", inner, err)
	}
	if fsType(t, dir) != unix.TMPFS_MAGIC {
		t.Fatal("the tmpfs went although a mount was under it")
	}
	if err := unix.Unmount(inner, 0); err != nil {
		t.Fatal(err)
	}
	if err := UnmountStateTmpfs(dir); err != nil {
		t.Fatalf("UnmountStateTmpfs: %v", err)
	}
	if fsType(t, dir) == unix.TMPFS_MAGIC {
		t.Fatal("still a tmpfs after UnmountStateTmpfs")
	}

	// On the host's own tmpfs nothing is mounted, and nothing unmounted.
	shm, err := os.MkdirTemp("/dev/shm", "statetmpfs-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(shm)
	ours, err = MountStateTmpfs(shm)
	if err != nil || ours {
		t.Fatalf("MountStateTmpfs on a tmpfs = %v, %v; want it left alone", ours, err)
	}
	if err := UnmountStateTmpfs(shm); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/dev/shm"); err != nil || fsType(t, "/dev/shm") != unix.TMPFS_MAGIC {
		t.Fatal("/dev/shm changed")
	}
}
