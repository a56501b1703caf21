package caddymodule

import (
	"context"
	"sync/atomic"
	"time"
)

// thisNode is this Caddy process as a node of a fleet: whether it drains
// and how many spawn requests it is serving. It is process-wide, like
// processOwner: a drain outlives config reloads, and requests of a config
// being replaced still count.
var thisNode = new(node)

// node is the fleet-facing state of one Caddy process.
type node struct {
	draining atomic.Bool
	inflight atomic.Int64
}

// enter counts a spawn request in; the returned func counts it out.
func (n *node) enter() (leave func()) {
	n.inflight.Add(1)
	return func() { n.inflight.Add(-1) }
}

// drain makes the node refuse new spawn requests from now on, then waits
// until none is in flight or ctx is done; it reports whether none is.
func (n *node) drain(ctx context.Context) bool {
	n.draining.Store(true)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for n.inflight.Load() > 0 {
		select {
		case <-ctx.Done():
			return n.inflight.Load() == 0
		case <-t.C:
		}
	}
	return true
}
