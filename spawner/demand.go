package spawner

import (
	"math"
	"time"
)

// demand counts a pool's claims in time buckets, to size an adaptive pool:
// how many containers arrive-and-claim during one refill.
type demand struct {
	epoch  time.Time
	counts [demandBuckets]uint32
	newest int64 // absolute index of the newest bucket written
	last   time.Time
}

const (
	demandBucket  = 250 * time.Millisecond
	demandBuckets = 128 // 32 s of history
	// shortWindow makes a pool grow within a second of a burst;
	// longWindow keeps a steady low rate's container warm and lets the
	// pool shrink slowly once a burst is over.
	shortWindow = time.Second
	longWindow  = 30 * time.Second
	// headroom covers arrivals in bursts within a refill and refills that
	// take longer than their average.
	headroom = 2.0
)

func newDemand(now time.Time) *demand { return &demand{epoch: now} }

func (d *demand) index(now time.Time) int64 { return int64(now.Sub(d.epoch) / demandBucket) }

// arrive records one claim (warm or cold) at now.
func (d *demand) arrive(now time.Time) {
	i := d.index(now)
	d.advance(i)
	d.counts[i%demandBuckets]++
	d.last = now
}

// advance clears the buckets between the newest written and i.
func (d *demand) advance(i int64) {
	if i <= d.newest {
		return
	}
	for j := d.newest + 1; j <= i && j <= d.newest+demandBuckets; j++ {
		d.counts[j%demandBuckets] = 0
	}
	d.newest = i
}

// rate is the claims per second over about the window ending at now: its
// whole buckets and the current, partial one.
func (d *demand) rate(now time.Time, window time.Duration) float64 {
	i := d.index(now)
	d.advance(i)
	n := int64(window / demandBucket)
	var sum uint32
	for j := i; j >= i-n && j >= 0; j-- {
		sum += d.counts[j%demandBuckets]
	}
	span := window + now.Sub(d.epoch.Add(time.Duration(i)*demandBucket))
	return float64(sum) / span.Seconds()
}

// recent is the claim rate the pool should cover: the higher of the last
// second's and the last 30 seconds', so it rises at once and falls slowly.
func (d *demand) recent(now time.Time) float64 {
	return max(d.rate(now, shortWindow), d.rate(now, longWindow))
}

// quiet reports whether claims have stopped: none for four of the gaps
// the last second's rate had between them, and at least one resize tick
// (at most a second) — a steady 2 claims/s is never quiet, a burst at
// 20/s is a fraction of a second after its last claim.
func (d *demand) quiet(now time.Time) bool {
	if d.last.IsZero() {
		return true
	}
	after := shortWindow
	if r := d.rate(now, shortWindow); r > 0 {
		after = min(max(time.Duration(quietGaps/r*float64(time.Second)), resizeEvery), shortWindow)
	}
	return now.Sub(d.last) > after
}

// quietGaps is how many of its usual gaps between claims make a pool quiet.
const quietGaps = 4

// want is how many idle containers cover the claims expected during one
// refill taking refill, with headroom, and at least one while the pool has
// had a claim within idleTimeout (0: ever). It is 0 before the first claim
// and once idleTimeout has passed since the last. (The headroom already
// covers a refill twice as slow as the average: a steady 2 claims/s with
// 100 ms refills needs one container, not two — the bench's bursty trace
// measured the second one idle 90% of the time.)
func (d *demand) want(now time.Time, refill, idleTimeout time.Duration) int {
	if d.last.IsZero() || (idleTimeout > 0 && now.Sub(d.last) > idleTimeout) {
		return 0
	}
	n := d.recent(now) * refill.Seconds() * headroom
	return max(int(math.Ceil(n)), 1)
}
