package caddymodule

import (
	"context"
	"sync"
	"time"

	"github.com/caddy-spawn/caddy-spawn/snapshots"
	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// route is one spawn handler's function as the app sees it: its image
// source and, once the image is ready, the spawner.Function to run.
type route struct {
	name    string
	image   string
	archive string
	base    spawner.Function // everything but the image

	mu    sync.Mutex
	ready chan struct{}
	fn    *spawner.Function
}

func newRoute(name, image, archive string, base spawner.Function) *route {
	return &route{name: name, image: image, archive: archive, base: base, ready: make(chan struct{})}
}

func (r *route) setReady(img *snapshots.Ready) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fn != nil {
		return
	}
	fn := r.base
	fn.Image = img
	r.fn = &fn
	close(r.ready)
}

func (r *route) isReady() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fn != nil
}

// function waits up to wait for the route's image, and returns nil if it
// is still not ready then.
func (r *route) function(ctx context.Context, wait time.Duration) *spawner.Function {
	select {
	case <-r.ready:
	default:
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-r.ready:
		case <-t.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fn
}
