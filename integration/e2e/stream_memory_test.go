//go:build integration

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestStreamMemory streams 1 GiB out of a container through Caddy and
// checks that Caddy's resident memory grows by less than 64 MiB: the
// response is streamed with a bounded buffer, never held.
func TestStreamMemory(t *testing.T) {
	port := freePort(t)
	const size = 1 << 30
	p := startCaddy(t, port, site(port,
		testfnRoute("/gib", "gib", fmt.Sprintf("flood %d", size), "pool 0", "timeout 5m")))
	pid := p.proc.Pid()
	// One request first, so lazily allocated pools are in the baseline.
	if resp, _ := p.get(t, "/nope"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("warm-up: status %d", resp.StatusCode)
	}
	before := rssKiB(t, pid)

	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if kib := rssKiB(t, pid); kib > peak.Load() {
				peak.Store(kib)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	client := &http.Client{Timeout: 5 * time.Minute}
	resp, err := client.Get(p.url("/gib"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	close(stop)
	<-sampled
	if err != nil || n != size {
		t.Fatalf("read %d bytes (err %v), want %d", n, err, size)
	}
	if got := resp.Trailer.Get("Spawn-Exit-Code"); got != "0" {
		t.Errorf("Spawn-Exit-Code trailer %q, want 0", got)
	}
	growth := peak.Load() - before
	t.Logf("Caddy RSS before %d KiB, peak %d KiB while streaming 1 GiB: growth %d KiB", before, peak.Load(), growth)
	if growth >= 64<<10 {
		t.Errorf("Caddy's RSS grew by %d KiB streaming 1 GiB, want < 64 MiB", growth)
	}
}

// rssKiB returns a process's resident set size in KiB.
func rssKiB(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}
