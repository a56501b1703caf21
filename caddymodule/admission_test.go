package caddymodule

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func TestWaitEstimate(t *testing.T) {
	w := newWaitEstimate()
	now := time.Now()
	if _, ok := w.estimate(now, 1, true); ok {
		t.Fatal("an estimate without any sample")
	}
	// One request held the only slot for 6 s.
	w.hold(now.Add(-6 * time.Second))()
	if _, ok := w.estimate(now, 1, false); ok {
		t.Error("an estimate for a queue with a free slot")
	}
	release := w.hold(now.Add(-time.Second)) // running for 1 s
	est, ok := w.estimate(now, 1, false)
	if !ok || est < 4900*time.Millisecond || est > 5100*time.Millisecond {
		t.Errorf("estimate with the slot held 1 s of 6 = %v, %v; want ~5s", est, ok)
	}
	done := w.queued()
	if est, _ := w.estimate(now, 1, false); est < 10900*time.Millisecond || est > 11100*time.Millisecond {
		t.Errorf("estimate behind one waiter = %v, want ~11s", est)
	}
	done()
	// A cold start adds to the queue's wait when the pool is empty, while
	// its sample is fresh; alone it is no queue.
	w.observeCold(200 * time.Millisecond)
	if est, _ := w.estimate(now, 1, true); est < 5100*time.Millisecond || est > 5300*time.Millisecond {
		t.Errorf("estimate with a cold start = %v, want ~5.2s", est)
	}
	w.coldSeen = now.Add(-time.Minute)
	if est, _ := w.estimate(now, 1, true); est > 5100*time.Millisecond {
		t.Errorf("estimate %v counts a stale cold sample", est)
	}
	release()
	w.observeCold(200 * time.Millisecond)
	if _, ok := w.estimate(now, 0, true); ok {
		t.Error("an estimate from a cold start alone, without a queue")
	}
}

func TestShedOverQueueTimeout(t *testing.T) {
	if err := initMetrics(prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
	h := &Handler{Name: "slow", MaxConcurrent: 1, QueueTimeout: caddy.Duration(2 * time.Second), waits: newWaitEstimate()}
	now := time.Now()
	h.waits.hold(now.Add(-6 * time.Second))()
	rec := httptest.NewRecorder()
	if err := h.shed(rec); err != nil {
		t.Fatalf("shed with a free slot: %v", err)
	}
	defer h.waits.hold(now)()
	err := h.shed(rec)
	var he caddyhttp.HandlerError
	if !errors.As(err, &he) || he.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("shed with the slot held = %v, want a 503", err)
	}
	if got := rec.Header().Get("Retry-After"); got != "6" {
		t.Errorf("Retry-After %q, want 6 (the estimate)", got)
	}
	h.QueueTimeout = caddy.Duration(time.Minute)
	if err := h.shed(httptest.NewRecorder()); err != nil {
		t.Errorf("shed within queue_timeout: %v", err)
	}
}
