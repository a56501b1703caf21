package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
)

// maxBackoff caps the wait between two attempts.
const maxBackoff = 10 * time.Minute

// ErrFull is returned by Accept when the queue holds MaxQueued pending jobs.
var ErrFull = errors.New("job queue full")

// Config is a Queue's settings.
type Config struct {
	// Store keeps the jobs. Required.
	Store *Store
	// Workers is how many attempts run at once. Default: 1.
	Workers int
	Limits
	// Logger gets the queue's own events (a job's program logs through the
	// Runner). Default: a no-op logger.
	Logger *zap.Logger
	// OnRetry and OnFailure, when set, are called for every attempt that
	// failed and will be retried, and for every job that failed for good.
	OnRetry, OnFailure func()
}

// Limits are the settings of a queue that a config reload may change.
type Limits struct {
	// MaxQueued bounds the pending (queued, retrying or running) jobs;
	// 0 means unbounded.
	MaxQueued int
	// MaxRetries is how many times a failed attempt is retried.
	MaxRetries int
	// Backoff is the wait before the first retry; it doubles with each
	// one, up to 10 minutes.
	Backoff time.Duration
	// ResultTTL is how long a finished job's result is kept.
	ResultTTL time.Duration
	// MaxResultBytes bounds the stored response body; 0 means unbounded.
	MaxResultBytes int64
}

// Attempt is what a Runner gets to run one attempt of a job.
type Attempt struct {
	// Job is a copy of the job's record.
	Job *Job
	// Number counts from 1: Job.Attempts, this one included.
	Number int
	// Body is the stored request body.
	Body io.Reader
	// Output takes the response body; beyond the queue's MaxResultBytes it
	// is counted and dropped.
	Output io.Writer
}

// Outcome is how an attempt ended, as the Runner tells it.
type Outcome struct {
	// Result is the response and exit information; its BodySize and
	// Truncated are filled in by the queue.
	Result Result
	// Failed makes the attempt count as failed: it is retried up to
	// MaxRetries times.
	Failed bool
}

// Runner runs one attempt. ctx ends when the job is cancelled or the queue
// closes; the Runner must then stop the attempt and return soon.
type Runner func(ctx context.Context, a Attempt) Outcome

// Stats are a queue's current figures.
type Stats struct {
	Queued, Running, Retrying, Finished int
	// OldestQueued is when the oldest job waiting to run (queued or
	// retrying) was accepted; zero when none waits.
	OldestQueued time.Time
}

// Queue runs a route's jobs from its Store: up to Workers attempts at once,
// retried with exponential back-off, their results kept for ResultTTL.
// Construct it with NewQueue (no I/O), then Open it (it loads the store) and
// Start it (it runs jobs).
type Queue struct {
	store   *Store
	workers int
	logger  *zap.Logger
	onRetry func()
	onFail  func()

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	openOnce  sync.Once
	openErr   error
	startOnce sync.Once

	mu      sync.Mutex
	limits  Limits
	jobs    map[string]*entry
	pending int           // jobs not final, plus accepts in progress
	changed chan struct{} // closed and replaced when a job becomes runnable
	closed  bool
}

// entry is one job in memory. mu orders the writes of its record, so a
// cancelled job's files are never written again.
type entry struct {
	mu      sync.Mutex
	job     *Job // guarded by Queue.mu; replaced, never changed in place
	cancel  context.CancelFunc
	deleted bool // guarded by mu
}

// NewQueue returns a queue over cfg.Store; it does no I/O.
func NewQueue(cfg Config) *Queue {
	ctx, cancel := context.WithCancel(context.Background())
	q := &Queue{
		store: cfg.Store, workers: max(cfg.Workers, 1), logger: cfg.Logger,
		onRetry: cfg.OnRetry, onFail: cfg.OnFailure,
		ctx: ctx, cancel: cancel,
		limits: cfg.Limits, jobs: map[string]*entry{}, changed: make(chan struct{}),
	}
	if q.logger == nil {
		q.logger = zap.NewNop()
	}
	return q
}

// SetLimits changes the queue's limits; running attempts keep theirs.
func (q *Queue) SetLimits(l Limits) {
	q.mu.Lock()
	q.limits = l
	q.mu.Unlock()
}

// Open loads the store, once: pending jobs become runnable (one that was
// running when the process died runs again), expired results are removed.
func (q *Queue) Open() error {
	q.openOnce.Do(func() {
		loaded, err := q.store.Load(q.logger)
		if err != nil {
			q.openErr = err
			return
		}
		q.mu.Lock()
		defer q.mu.Unlock()
		for _, j := range loaded {
			if j.State.Final() && q.expiredLocked(j, time.Now()) {
				_ = q.store.Remove(j.ID)
				continue
			}
			if j.State == Running {
				q.logger.Warn("job was running when caddy stopped; it runs again (at least once)",
					zap.String("job", j.ID), zap.Int("attempts", j.Attempts))
				j.State = Queued
			}
			if !j.State.Final() {
				q.pending++
			}
			q.jobs[j.ID] = &entry{job: j}
		}
		q.notifyLocked()
	})
	return q.openErr
}

// Start opens the queue if need be and starts its workers and the expiry
// sweep, once.
func (q *Queue) Start(run Runner) error {
	if err := q.Open(); err != nil {
		return err
	}
	q.startOnce.Do(func() {
		for range q.workers {
			q.wg.Add(1)
			go q.work(run)
		}
		q.wg.Add(1)
		go q.sweep()
	})
	return nil
}

// Close stops the workers, interrupting running attempts: their jobs stay
// stored as running and run again at the next Open. It waits for them.
func (q *Queue) Close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cancel()
	q.wg.Wait()
}

// Accept stores a new job made from tmpl (its request fields) and the body
// read from r, at most maxBody bytes (0: unbounded), and returns it once
// both are durable. It fails with ErrFull at MaxQueued, ErrBodyTooLarge
// over maxBody, or the store's error: a job it returns is stored, one it
// fails is not.
func (q *Queue) Accept(tmpl Job, r io.Reader, maxBody int64) (*Job, error) {
	if err := q.Open(); err != nil {
		return nil, err
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil, fmt.Errorf("%w: closed", ErrFull)
	}
	if limit := q.limits.MaxQueued; limit > 0 && q.pending >= limit {
		q.mu.Unlock()
		return nil, fmt.Errorf("%w: %d jobs pending (max_queued %d)", ErrFull, limit, limit)
	}
	q.pending++ // reserved while the body is written
	q.mu.Unlock()

	j := tmpl
	j.ID, j.Created, j.State, j.Attempts = NewID(), time.Now().UTC(), Queued, 0
	n, err := q.store.WriteBody(j.ID, r, maxBody)
	if err == nil {
		j.BodySize = n
		err = q.store.Save(&j)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if err != nil {
		q.pending--
		_ = q.store.Remove(j.ID)
		return nil, err
	}
	q.jobs[j.ID] = &entry{job: &j}
	q.notifyLocked()
	return j.clone(), nil
}

// Get returns a copy of job id, if it exists and has not expired.
func (q *Queue) Get(id string) (*Job, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e, ok := q.jobs[id]
	if !ok || (e.job.State.Final() && q.expiredLocked(e.job, time.Now())) {
		return nil, false
	}
	return e.job.clone(), true
}

// OpenOutput opens the stored response body of a finished job.
func (q *Queue) OpenOutput(id string) (*os.File, error) { return q.store.OpenOutput(id) }

// Cancel removes job id: a pending job never runs (again), a running
// attempt is stopped, a result is deleted. It reports whether the job
// existed.
func (q *Queue) Cancel(id string) (bool, error) {
	q.mu.Lock()
	e, ok := q.jobs[id]
	if ok {
		delete(q.jobs, id)
		if !e.job.State.Final() {
			q.pending--
		}
		if e.cancel != nil {
			e.cancel()
		}
	}
	q.mu.Unlock()
	if !ok {
		return false, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.deleted = true
	return true, q.store.Remove(id)
}

// Stats counts the queue's jobs by state.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	var s Stats
	for _, e := range q.jobs {
		j := e.job
		switch j.State {
		case Queued:
			s.Queued++
		case Running:
			s.Running++
		case Retrying:
			s.Retrying++
		case Succeeded, Failed:
			s.Finished++
		}
		if (j.State == Queued || j.State == Retrying) && (s.OldestQueued.IsZero() || j.Created.Before(s.OldestQueued)) {
			s.OldestQueued = j.Created
		}
	}
	return s
}

// work runs attempts until the queue closes.
func (q *Queue) work(run Runner) {
	defer q.wg.Done()
	for {
		e, j, ctx := q.next()
		if e == nil {
			return
		}
		q.attempt(ctx, run, e, j)
	}
}

// next waits for a runnable job and marks it running: the earliest due,
// oldest first, with the context of its attempt, which Cancel ends. It
// returns nil when the queue closes.
func (q *Queue) next() (*entry, *Job, context.Context) {
	for {
		q.mu.Lock()
		if q.ctx.Err() != nil {
			q.mu.Unlock()
			return nil, nil, nil
		}
		now := time.Now()
		var best *entry
		var wait time.Duration = -1
		for _, e := range q.jobs {
			j := e.job
			if j.State != Queued && j.State != Retrying {
				continue
			}
			if d := j.NextRun.Sub(now); d > 0 {
				if wait < 0 || d < wait {
					wait = d
				}
				continue
			}
			if best == nil || j.Created.Before(best.job.Created) {
				best = e
			}
		}
		if best != nil {
			j := best.job.clone()
			j.State, j.Attempts, j.NextRun = Running, j.Attempts+1, time.Time{}
			best.job = j
			ctx, cancel := context.WithCancel(q.ctx)
			best.cancel = cancel
			q.mu.Unlock()
			return best, j.clone(), ctx
		}
		changed := q.changed
		q.mu.Unlock()
		var timer <-chan time.Time
		if wait >= 0 {
			t := time.NewTimer(wait)
			timer = t.C
			defer t.Stop()
		}
		select {
		case <-q.ctx.Done():
			return nil, nil, nil
		case <-changed:
		case <-timer:
		}
	}
}

// attempt runs one attempt of j (already marked running) and records how
// it ended.
func (q *Queue) attempt(ctx context.Context, run Runner, e *entry, j *Job) {
	log := q.logger.With(zap.String("job", j.ID), zap.Int("attempt", j.Attempts))
	defer func() {
		q.mu.Lock()
		if e.cancel != nil {
			e.cancel()
			e.cancel = nil
		}
		q.mu.Unlock()
	}()
	q.mu.Lock()
	limits := q.limits
	q.mu.Unlock()
	// The attempt is on disk before it starts: after a crash it counts,
	// and the next one gets the next number.
	if !q.saveEntry(e, j) {
		return
	}

	out, err := q.store.CreateOutput(j.ID)
	if err != nil {
		log.Error("creating job output", zap.Error(err))
		q.retryLater(e, j, limits, Result{Status: 503, Error: err.Error()})
		return
	}
	body, err := q.store.OpenBody(j.ID)
	var oc Outcome
	capped := &cappedWriter{w: out, max: limits.MaxResultBytes}
	if err != nil {
		oc = Outcome{Failed: true, Result: Result{Status: 500, Error: fmt.Sprintf("opening stored body: %v", err)}}
	} else {
		oc = run(ctx, Attempt{Job: j.clone(), Number: j.Attempts, Body: body, Output: capped})
		_ = body.Close()
	}
	if q.ctx.Err() != nil {
		// Closing: the job stays stored as running and runs again.
		q.store.DiscardOutput(out)
		return
	}
	res := oc.Result
	res.BodySize, res.Truncated = capped.n, capped.dropped
	e.mu.Lock()
	if e.deleted {
		e.mu.Unlock()
		q.store.DiscardOutput(out)
		return
	}
	j = j.clone()
	j.Result = &res
	final := !oc.Failed || j.Attempts > limits.MaxRetries
	switch {
	case !oc.Failed:
		j.State = Succeeded
	case final:
		j.State = Failed
	default:
		j.State = Retrying
		j.NextRun = time.Now().Add(backoff(limits.Backoff, j.Attempts))
	}
	if final {
		j.Finished = time.Now().UTC()
		if err := q.store.CommitOutput(j.ID, out); err != nil {
			log.Error("storing job result", zap.Error(err))
			j.Result.BodySize, j.Result.Truncated = 0, true
		}
	} else {
		q.store.DiscardOutput(out)
	}
	err = q.store.Save(j)
	if err == nil && final {
		q.store.RemoveBody(j.ID)
	}
	e.mu.Unlock()
	if err != nil {
		// The record on disk still says running: the job runs again at
		// the next start; in memory it waits for a retry.
		log.Error("saving job state", zap.Error(err))
	}
	switch j.State {
	case Retrying:
		log.Info("job attempt failed; retrying", zap.String("error", res.Error), zap.Time("next_run", j.NextRun))
		if q.onRetry != nil {
			q.onRetry()
		}
	case Failed:
		log.Warn("job failed", zap.String("error", res.Error), zap.Int("attempts", j.Attempts))
		if q.onFail != nil {
			q.onFail()
		}
	case Queued, Running, Succeeded:
	}
	q.mu.Lock()
	if cur, ok := q.jobs[j.ID]; ok && cur == e {
		e.job = j
		if final {
			q.pending--
		}
		q.notifyLocked()
	}
	q.mu.Unlock()
}

// retryLater puts j back for a retry after a failure of our own (not of the
// program's): the attempt still counts.
func (q *Queue) retryLater(e *entry, j *Job, limits Limits, res Result) {
	j = j.clone()
	j.State, j.Result = Retrying, &res
	j.NextRun = time.Now().Add(backoff(limits.Backoff, j.Attempts))
	q.saveEntry(e, j)
	q.mu.Lock()
	if cur, ok := q.jobs[j.ID]; ok && cur == e {
		e.job = j
		q.notifyLocked()
	}
	q.mu.Unlock()
}

// saveEntry saves j unless its job was cancelled; false when it was.
func (q *Queue) saveEntry(e *entry, j *Job) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.deleted {
		return false
	}
	if err := q.store.Save(j); err != nil {
		q.logger.Error("saving job state", zap.String("job", j.ID), zap.Error(err))
	}
	return true
}

// sweep removes expired results, now and then, until the queue closes.
func (q *Queue) sweep() {
	defer q.wg.Done()
	for {
		q.mu.Lock()
		every := min(max(q.limits.ResultTTL/4, time.Second), time.Minute)
		now := time.Now()
		var expired []string
		for id, e := range q.jobs {
			if e.job.State.Final() && q.expiredLocked(e.job, now) {
				expired = append(expired, id)
			}
		}
		q.mu.Unlock()
		for _, id := range expired {
			if _, err := q.Cancel(id); err != nil {
				q.logger.Error("removing expired job", zap.String("job", id), zap.Error(err))
			}
		}
		select {
		case <-q.ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

func (q *Queue) expiredLocked(j *Job, now time.Time) bool {
	return q.limits.ResultTTL > 0 && now.Sub(j.Finished) > q.limits.ResultTTL
}

// notifyLocked wakes the workers waiting for a runnable job.
func (q *Queue) notifyLocked() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// backoff is the wait after failed attempt n (1-based): base, 2×base,
// 4×base… up to maxBackoff.
func backoff(base time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

// cappedWriter writes up to max bytes (0: all) to w and counts the rest.
type cappedWriter struct {
	w       io.Writer
	max     int64
	n       int64
	dropped bool
}

func (c *cappedWriter) Write(p []byte) (int, error) {
	keep := p
	if c.max > 0 && c.n+int64(len(p)) > c.max {
		keep = p[:c.max-c.n]
		c.dropped = true
	}
	if len(keep) > 0 {
		if _, err := c.w.Write(keep); err != nil {
			return 0, err
		}
		c.n += int64(len(keep))
	}
	return len(p), nil
}
