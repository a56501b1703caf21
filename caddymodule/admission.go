package caddymodule

import (
	"sync"
	"time"
)

// waitEstimate estimates how long a new request of a route would wait
// before its program starts: for one of the route's max_concurrent slots
// (the queue ahead of it and how long requests hold a slot) and then, when
// the pool has no warm container, for a cold creation. A request whose
// estimate exceeds queue_timeout is answered 503 at once instead of
// after waiting it out. It is shared, like the route, across reloads.
type waitEstimate struct {
	mu       sync.Mutex
	service  time.Duration // moving average of how long a request holds a slot
	served   bool          // service has a sample
	holders  map[uint64]time.Time
	next     uint64
	waiting  int           // requests waiting for a slot
	cold     time.Duration // moving average of a cold start
	coldSeen time.Time     // its last sample
}

// coldFresh is how long a cold-start sample stays good for an estimate:
// an estimate from old samples could otherwise refuse every request and,
// refusing them, never get a new one.
const coldFresh = 30 * time.Second

func newWaitEstimate() *waitEstimate {
	return &waitEstimate{holders: map[uint64]time.Time{}}
}

// estimate is the expected wait of a request arriving at now, and whether
// there is one: slots is the route's max_concurrent (0: unbounded), cold
// whether it would have to create its container.
func (w *waitEstimate) estimate(now time.Time, slots int, cold bool) (time.Duration, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var est time.Duration
	known := false
	if slots > 0 && len(w.holders) >= slots && w.served {
		// The first slot frees when the oldest holder is expected to end;
		// each full round of waiters ahead takes one more service time.
		var oldest time.Time
		for _, t := range w.holders {
			if oldest.IsZero() || t.Before(oldest) {
				oldest = t
			}
		}
		est = max(w.service-now.Sub(oldest), 0) + time.Duration(w.waiting/slots)*w.service
		known = true
	}
	// A cold start adds to a queue's wait; alone it is no queue, and
	// refusing requests for it would leave a pool-less route with a short
	// queue_timeout refusing everything.
	if known && cold && !w.coldSeen.IsZero() && now.Sub(w.coldSeen) < coldFresh {
		est += w.cold
		known = true
	}
	return est, known
}

// queued counts a request waiting for a slot until the returned func.
func (w *waitEstimate) queued() (done func()) {
	w.mu.Lock()
	w.waiting++
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		w.waiting--
		w.mu.Unlock()
	}
}

// hold records a request taking a slot at now; the returned func records
// it giving the slot back, and how long it held it.
func (w *waitEstimate) hold(now time.Time) (release func()) {
	w.mu.Lock()
	id := w.next
	w.next++
	w.holders[id] = now
	w.mu.Unlock()
	return func() {
		took := time.Since(now)
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.holders, id)
		w.service = average(w.service, took, w.served)
		w.served = true
	}
}

// observeCold records how long a cold start took.
func (w *waitEstimate) observeCold(took time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cold = average(w.cold, took, !w.coldSeen.IsZero())
	w.coldSeen = time.Now()
}

// average is a moving average weighing the new sample 3/10, or the sample
// alone when there is no average yet.
func average(avg, sample time.Duration, have bool) time.Duration {
	if !have {
		return sample
	}
	return (avg*7 + sample*3) / 10
}
