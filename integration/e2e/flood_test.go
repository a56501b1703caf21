//go:build integration

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestFloodMaxContainers: 2,000 requests, 500 at a time, each client
// leaving after 200 ms, against a route with pool 2 under max_containers 32.
// Caddy keeps answering another route, the app never has more than 32
// containers, and soon after the flood only the pool is left: no extra
// containers, mounts or FIFOs.
func TestFloodMaxContainers(t *testing.T) {
	const (
		total, parallel = 2000, 500
		maxContainers   = 32
	)
	port := freePort(t)
	sites := site(port,
		testfnRoute("/slow", "slow", "sleep 1s", "pool 2", "queue_timeout 1s"),
		"\thandle /ping {\n\t\trespond \"pong\"\n\t}\n",
	)
	p := startCaddyConfig(t, port, caddyfileWith(sites, fmt.Sprintf("max_containers %d", maxContainers)))
	p.waitPoolFull(t, "slow", 2)

	var peak atomic.Int64
	stop := make(chan struct{})
	var watch sync.WaitGroup
	watch.Go(func() {
		for {
			if cs, _, err := p.containerStates(); err == nil && int64(len(cs)) > peak.Load() {
				peak.Store(int64(len(cs)))
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	var pingFails atomic.Int64
	watch.Go(func() {
		c := &http.Client{Timeout: 2 * time.Second}
		for {
			resp, err := c.Get(p.url("/ping"))
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "pong" {
					pingFails.Add(1)
				}
			} else {
				pingFails.Add(1)
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})

	impatient := &http.Client{Timeout: 200 * time.Millisecond, Transport: &http.Transport{MaxIdleConnsPerHost: parallel}}
	next := make(chan int)
	var flood sync.WaitGroup
	for range parallel {
		flood.Go(func() {
			for range next {
				if resp, err := impatient.Get(p.url("/slow")); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	began := time.Now()
	for i := range total {
		next <- i
	}
	close(next)
	flood.Wait()
	t.Logf("flood of %d requests took %v", total, time.Since(began))

	// Ten seconds after the flood, only the pool is left.
	time.Sleep(10 * time.Second)
	eventually(t, 30*time.Second, func() (bool, string) {
		cs, _, err := p.containerStates()
		if err != nil {
			return false, err.Error()
		}
		rootfs := 0
		for _, m := range mountsUnder(stateDir) {
			if strings.HasSuffix(m, "/rootfs") {
				rootfs++
			}
		}
		fifos, _ := filepath.Glob(filepath.Join(runDir, "fifo", "*", "*", "caddy-spawn-*"))
		return len(cs) == 2 && rootfs == 2 && len(fifos) == 2*3,
			fmt.Sprintf("after the flood: %d containers, %d rootfs mounts, %d FIFOs; want the pool's 2, 2, 6", len(cs), rootfs, len(fifos))
	})
	close(stop)
	watch.Wait()
	if got := peak.Load(); got > maxContainers {
		t.Errorf("peak of %d containers, over max_containers %d", got, maxContainers)
	}
	t.Logf("peak %d containers", peak.Load())
	if n := pingFails.Load(); n > 0 {
		t.Errorf("another route failed to answer %d times during the flood", n)
	}
}
