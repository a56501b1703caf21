//go:build integration

package e2e

import (
	"net/http"
	"regexp"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDiskBound: a function that writes 2 GiB into its root filesystem
// under `disk 64MiB` gets ENOSPC near 64 MiB, the host's disk barely
// notices, and the route serves the next request. (The writable layer is a
// size-capped tmpfs under the overlay: the fast path's.)
func TestDiskBound(t *testing.T) {
	port := freePort(t)
	p := startCaddy(t, port, site(port,
		testfnRoute("/fill", "fill", "fill /big", "pool 0", "disk 64MiB", "memory 512MiB", "timeout 1m"),
	))
	var before unix.Statfs_t
	if err := unix.Statfs(stateDir, &before); err != nil {
		t.Fatal(err)
	}
	resp, body := p.get(t, "/fill")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %q", resp.StatusCode, body)
	}
	m := regexp.MustCompile(`^wrote (\d+) MiB: (.*)\n$`).FindStringSubmatch(string(body))
	if m == nil {
		t.Fatalf("body %q", body)
	}
	mib, _ := strconv.Atoi(m[1])
	if m[2] != "write /big: no space left on device" || mib < 56 || mib > 64 {
		t.Errorf("wrote %d MiB and stopped with %q; want ENOSPC near 64 MiB", mib, m[2])
	}
	var after unix.Statfs_t
	if err := unix.Statfs(stateDir, &after); err != nil {
		t.Fatal(err)
	}
	drop := (int64(before.Bavail) - int64(after.Bavail)) * before.Bsize
	if drop > 100<<20 {
		t.Errorf("host free space dropped by %d MiB, want < 100 MiB", drop>>20)
	}
	t.Logf("wrote %d MiB before ENOSPC; host free space changed by %d KiB", mib, drop>>10)
	if resp, body := p.get(t, "/fill"); resp.StatusCode != http.StatusOK {
		t.Errorf("next request: status %d, body %q", resp.StatusCode, body)
	}
}
