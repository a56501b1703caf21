package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// countingBody is a request body that counts the bytes read from it.
type countingBody struct{ read atomic.Int64 }

func (b *countingBody) Read(p []byte) (int, error) {
	n := copy(p, "0123456789")
	b.read.Add(int64(n))
	return n, nil
}

func (b *countingBody) Close() error { return nil }

// TestServeHTTPRefusal: a request the node cannot take before its body is
// read gets 503 with Spawn-Refused and its reason, and none of its body is
// read; failures after that point carry no marker (a front must not
// retry them).
func TestServeHTTPRefusal(t *testing.T) {
	for _, tc := range []struct {
		name       string
		draining   bool
		full       bool // max_concurrent 1, taken
		acquireErr error
		beginErr   error
		wantStatus int
		wantReason string
	}{
		{name: "draining", draining: true, wantStatus: http.StatusServiceUnavailable, wantReason: refusedDraining},
		{name: "max_concurrent reached", full: true, wantStatus: http.StatusServiceUnavailable, wantReason: refusedOverloaded},
		{name: "max_containers reached", acquireErr: fmt.Errorf("creating: %w", spawner.ErrAtCapacity), wantStatus: http.StatusServiceUnavailable, wantReason: refusedOverloaded},
		{name: "image not ready", acquireErr: errImageNotReady, wantStatus: http.StatusServiceUnavailable, wantReason: refusedNotReady},
		{name: "containerd unavailable", acquireErr: fmt.Errorf("creating: %w", spawner.ErrUnavailable), wantStatus: http.StatusServiceUnavailable, wantReason: refusedNotReady},
		{name: "start failed", acquireErr: errors.New("runc: exec failed"), wantStatus: http.StatusBadGateway},
		{name: "request frame not delivered", beginErr: errors.New("broken pipe"), wantStatus: http.StatusBadGateway},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ht := newHandlerTest(t, func(p *fakeProcess) uint32 { p.write("\n"); return 0 }, func(h *Handler) {
				h.QueueTimeout = caddy.Duration(20 * time.Millisecond)
				if tc.full {
					h.MaxConcurrent = 1
					h.limit = semaphore.NewWeighted(1)
					h.limit.TryAcquire(1)
				}
			})
			ht.src.err = tc.acquireErr
			ht.src.proc.beginErr = tc.beginErr
			thisNode.draining.Store(tc.draining)
			t.Cleanup(func() { thisNode.draining.Store(false) })
			body := new(countingBody)
			req := httptest.NewRequest(http.MethodPost, "/", body)
			rec := httptest.NewRecorder()
			panicked, err := ht.serve(rec, req)
			checkHandlerError(t, err, panicked, tc.wantStatus, nil)
			if got := rec.Header().Get(headerRefused); got != tc.wantReason {
				t.Errorf("%s %q, want %q", headerRefused, got, tc.wantReason)
			}
			if tc.wantReason != "" && body.read.Load() != 0 {
				t.Errorf("refused, but %d bytes of the body were read", body.read.Load())
			}
			// Closing keeps Go's server from reading the body after the
			// handler (which would send 100 Continue).
			if wantClose := tc.wantReason != ""; (rec.Header().Get("Connection") == "close") != wantClose {
				t.Errorf("Connection %q on a refusal %t", rec.Header().Get("Connection"), wantClose)
			}
			if got := thisNode.inflight.Load(); got != 0 {
				t.Errorf("in flight after the request: %d, want 0", got)
			}
		})
	}
}

// TestServeHTTPInflight: a spawn request counts as in flight while it runs.
func TestServeHTTPInflight(t *testing.T) {
	running := make(chan struct{})
	finish := make(chan struct{})
	ht := newHandlerTest(t, func(p *fakeProcess) uint32 {
		close(running)
		<-finish
		p.write("\nok")
		return 0
	}, nil)
	done := make(chan error, 1)
	go func() {
		_, err := ht.serve(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
		done <- err
	}()
	<-running
	if got := thisNode.inflight.Load(); got != 1 {
		t.Errorf("in flight while serving: %d, want 1", got)
	}
	close(finish)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := thisNode.inflight.Load(); got != 0 {
		t.Errorf("in flight after: %d, want 0", got)
	}
}
