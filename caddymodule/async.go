package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-spawn/caddy-spawn/jobs"
)

// Async modes.
const (
	asyncOff    = "off"
	asyncAllow  = "allow"
	asyncAlways = "always"
)

// Defaults of the async settings, applied by AsyncConfig.setDefaults.
const (
	defaultMaxRetries     = 2
	defaultRetryBackoff   = time.Second
	defaultMaxQueued      = 1000
	defaultMaxResultBytes = 10 << 20
	defaultResultTTL      = 24 * time.Hour
	defaultAsyncWorkers   = 2
	// maxAsyncWorkers, maxRetries and maxQueued bound their fields.
	maxAsyncWorkers = 256
	maxRetries      = 100
	maxQueued       = 1 << 20
)

// jobQueryKey is the query parameter of a job's status URL.
const jobQueryKey = "spawn-job"

// Headers of async responses.
const (
	headerJobState  = "Spawn-Job-State"
	headerAttempts  = "Spawn-Attempts"
	headerTruncated = "Spawn-Result-Truncated"
)

// AsyncConfig makes a route accept requests asynchronously (RFC 7240
// "Prefer: respond-async"): the request is stored durably under Caddy's
// data directory and answered at once with 202 Accepted and a status URL;
// a worker runs it later in a fresh container, exactly as a synchronous
// request runs (same environment, limits, pool and max_concurrent),
// retrying failed runs. Delivery is at least once: a run interrupted by a
// crash or a shutdown runs again after the restart, and the program can
// tell from SPAWN_ATTEMPT (1 for the first run); SPAWN_JOB_ID is the job's
// ID.
//
// The status URL is the request's own path with ?spawn-job=<id>: GET
// answers 202 with a JSON state document while the job is pending, the
// stored response (status, headers and body as the program wrote them,
// plus Spawn-Job-State, Spawn-Attempts and Spawn-Exit-Code) once it
// succeeded, and a JSON document with the error, exit code and the end of
// its stderr once it failed. DELETE cancels a pending job (a running one
// is killed) or removes a result. IDs are 128 random bits; each route has
// its own jobs.
type AsyncConfig struct {
	// Mode is "off" (every request runs while the client waits), "allow"
	// (a request with "Prefer: respond-async" is accepted asynchronously)
	// or "always" (every request is). With allow or always, the query
	// parameter spawn-job of GET and DELETE requests belongs to the status
	// URL. Default: "off".
	Mode string `json:"mode,omitempty"`

	// MaxRetries is how many times a failed run (non-zero exit, killed,
	// out of memory, timed out, failed to start) is retried, from 0 to
	// 100. Default: 2.
	MaxRetries *int `json:"max_retries,omitempty"`

	// RetryBackoff is the wait before the first retry; it doubles with
	// each retry, up to 10 minutes. Default: 1s.
	RetryBackoff caddy.Duration `json:"retry_backoff,omitempty"`

	// MaxQueued bounds the route's pending jobs (queued, running or
	// retrying), from 1 to 1048576; beyond it a request gets 503 with
	// Retry-After and nothing is stored. Default: 1000.
	MaxQueued int `json:"max_queued,omitempty"`

	// MaxResultBytes bounds the stored response body of a job, in bytes;
	// beyond it the body is cut (the program still runs to its end) and
	// the stored response says Spawn-Result-Truncated: true. Default:
	// 10 MiB (10485760).
	MaxResultBytes int64 `json:"max_result_bytes,omitempty"`

	// ResultTTL is how long a finished job's result is kept, then
	// deleted. Default: 24h.
	ResultTTL caddy.Duration `json:"result_ttl,omitempty"`

	// Workers is how many of the route's jobs run at once, from 1 to 256;
	// they also take the route's max_concurrent slots, as requests do.
	// Changed by a reload, it takes effect at the next start. Default:
	// max_concurrent, or 2 when that is unbounded.
	Workers int `json:"workers,omitempty"`
}

func init() {
	handlerSubdirectives["async"] = parseAsync
}

// setDefaults fills in the unset async settings; workers follow the
// route's max_concurrent.
func (c *AsyncConfig) setDefaults(maxConcurrent int) {
	if c.Mode == "" {
		c.Mode = asyncOff
	}
	if c.MaxRetries == nil {
		n := defaultMaxRetries
		c.MaxRetries = &n
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = caddy.Duration(defaultRetryBackoff)
	}
	if c.MaxQueued == 0 {
		c.MaxQueued = defaultMaxQueued
	}
	if c.MaxResultBytes == 0 {
		c.MaxResultBytes = defaultMaxResultBytes
	}
	if c.ResultTTL == 0 {
		c.ResultTTL = caddy.Duration(defaultResultTTL)
	}
	if c.Workers == 0 {
		c.Workers = defaultAsyncWorkers
		if maxConcurrent > 0 {
			c.Workers = min(maxConcurrent, maxAsyncWorkers)
		}
	}
}

// limits are the queue limits of c.
func (c *AsyncConfig) limits() jobs.Limits {
	return jobs.Limits{
		MaxQueued: c.MaxQueued, MaxRetries: *c.MaxRetries, Backoff: time.Duration(c.RetryBackoff),
		ResultTTL: time.Duration(c.ResultTTL), MaxResultBytes: c.MaxResultBytes,
	}
}

// asyncQueues shares each route's job queue across config reloads, keyed by
// its directory: one queue per directory, whatever the configs.
var asyncQueues = caddy.NewUsagePool()

// asyncQueue is a route's job queue, and the handler of the config now in
// force, which runs its jobs.
type asyncQueue struct {
	key     string
	name    string
	q       *jobs.Queue
	handler atomic.Pointer[Handler]
	retries atomic.Int64
	fails   atomic.Int64
}

// Destruct stops the workers when the last config using the route is gone;
// interrupted jobs run again at the next start.
func (a *asyncQueue) Destruct() error {
	a.q.Close()
	liveQueues.Delete(a.key)
	return nil
}

// liveQueues are the queues the metrics report, by key.
var liveQueues sync.Map // string → *asyncQueue

// provisionAsync sets up the route's job queue, without I/O: the store is
// read when the route's image is ready (so never for caddy validate or
// adapt) or at the first async request.
func (h *Handler) provisionAsync(ctx caddy.Context) error {
	if h.Async == nil {
		return nil
	}
	h.Async.setDefaults(h.MaxConcurrent)
	if h.Async.Mode == asyncOff {
		return nil
	}
	if err := initAsyncMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering async metrics: %w", err)
	}
	dir := filepath.Join(caddy.AppDataDir(), "spawn", "async", h.app.Namespace, h.Name)
	logger := h.logger.With(zap.String("route", h.Name))
	val, _, err := asyncQueues.LoadOrNew(dir, func() (caddy.Destructor, error) {
		a := &asyncQueue{key: dir, name: h.Name}
		a.q = jobs.NewQueue(jobs.Config{
			Store: jobs.NewStore(dir), Workers: h.Async.Workers, Limits: h.Async.limits(), Logger: logger,
			OnRetry: func() { a.retries.Add(1) }, OnFailure: func() { a.fails.Add(1) },
		})
		return a, nil
	})
	if err != nil {
		return fmt.Errorf("loading job queue of %s: %w", h.Name, err)
	}
	a := val.(*asyncQueue)
	a.q.SetLimits(h.Async.limits())
	a.handler.Store(h)
	h.async = a
	liveQueues.Store(dir, a)
	route := h.route
	go func() {
		select {
		case <-route.ready:
		case <-ctx.Done():
			return
		}
		if err := a.q.Start(a.run); err != nil {
			logger.Error("starting job queue", zap.String("dir", dir), zap.Error(err))
		}
	}()
	return nil
}

// checkAsync checks the async settings, naming the field.
func (h *Handler) checkAsync() error {
	c := h.Async
	if c == nil {
		return nil
	}
	var retries *int
	if c.MaxRetries != nil {
		retries = c.MaxRetries
	}
	return firstError(
		ifSet(c.Mode, checkAsyncMode),
		func() error {
			if retries == nil {
				return nil
			}
			return checkMaxRetries(*retries)
		}(),
		ifSet(c.RetryBackoff, checkRetryBackoff),
		ifSet(c.MaxQueued, checkMaxQueued),
		ifSet(c.MaxResultBytes, checkMaxResultBytes),
		ifSet(c.ResultTTL, checkResultTTL),
		ifSet(c.Workers, checkAsyncWorkers),
	)
}

// cleanupAsync releases the route's queue; the last config using it stops
// it.
func (h *Handler) cleanupAsync() error {
	if h.async == nil {
		return nil
	}
	h.async.handler.CompareAndSwap(h, nil)
	_, err := asyncQueues.Delete(h.async.key)
	return err
}

func checkAsyncMode(m string) error {
	switch m {
	case asyncOff, asyncAllow, asyncAlways:
		return nil
	}
	return fmt.Errorf("async: mode %q must be %q, %q or %q", m, asyncOff, asyncAllow, asyncAlways)
}

func checkMaxRetries(n int) error {
	if n < 0 || n > maxRetries {
		return fmt.Errorf("async max_retries: %d must be between 0 and %d", n, maxRetries)
	}
	return nil
}

func checkRetryBackoff(d caddy.Duration) error { return positiveDuration("async retry_backoff", d) }

func checkResultTTL(d caddy.Duration) error { return positiveDuration("async result_ttl", d) }

func checkMaxQueued(n int) error {
	if n < 1 || n > maxQueued {
		return fmt.Errorf("async max_queued: %d must be between 1 and %d", n, maxQueued)
	}
	return nil
}

func checkMaxResultBytes(n int64) error {
	if n < 1 {
		return fmt.Errorf("async max_result_bytes: %d must be at least 1", n)
	}
	return nil
}

func checkAsyncWorkers(n int) error {
	if n < 1 || n > maxAsyncWorkers {
		return fmt.Errorf("async workers: %d must be between 1 and %d", n, maxAsyncWorkers)
	}
	return nil
}

// parseAsync parses the async subdirective:
//
//	async off|allow|always {
//		max_retries      <n>
//		retry_backoff    <duration>
//		max_queued       <n>
//		max_result_bytes <size>
//		result_ttl       <duration>
//		workers          <n>
//	}
func parseAsync(h *Handler, d *caddyfile.Dispenser) error {
	c := &AsyncConfig{}
	h.Async = c
	if err := stringArg(d, &c.Mode, checkAsyncMode); err != nil {
		return err
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] {
			return d.Errf("async: duplicate subdirective %q", sub)
		}
		seen[sub] = true
		var err error
		switch sub {
		case "max_retries":
			c.MaxRetries = new(int)
			err = intArg(d, "async max_retries", c.MaxRetries, checkMaxRetries)
		case "retry_backoff":
			err = durationArg(d, "async retry_backoff", &c.RetryBackoff, checkRetryBackoff)
		case "max_queued":
			err = intArg(d, "async max_queued", &c.MaxQueued, checkMaxQueued)
		case "max_result_bytes":
			err = sizeArg(d, "async max_result_bytes", &c.MaxResultBytes, checkMaxResultBytes)
		case "result_ttl":
			err = durationArg(d, "async result_ttl", &c.ResultTTL, checkResultTTL)
		case "workers":
			err = intArg(d, "async workers", &c.Workers, checkAsyncWorkers)
		default:
			return d.Errf("async: unknown subdirective %q", sub)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// serveAsync answers the requests that belong to the route's async side:
// a job's status URL, and requests to accept as jobs. handled is false for
// the rest, which run while the client waits.
func (h *Handler) serveAsync(w http.ResponseWriter, r *http.Request) (handled bool, err error) {
	a := h.async
	if a == nil {
		return false, nil
	}
	if id := r.URL.Query().Get(jobQueryKey); id != "" {
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			return true, h.jobStatus(w, r, id)
		case http.MethodDelete:
			return true, h.cancelJob(w, id)
		}
	}
	if h.Async.Mode == asyncAlways || prefersAsync(r.Header) {
		return true, h.acceptJob(w, r)
	}
	return false, nil
}

// acceptJob stores the request as a job and answers 202 once it is durable.
func (h *Handler) acceptJob(w http.ResponseWriter, r *http.Request) error {
	ex := &exchange{h: h, r: r}
	tmpl := jobs.Job{Method: r.Method, URI: r.URL.RequestURI(), Env: ex.cgiEnv()}
	var body io.Reader = http.NoBody
	if r.Body != nil {
		body = r.Body
	}
	j, err := h.async.q.Accept(tmpl, body, *h.MaxRequestBody)
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, jobs.ErrBodyTooLarge), errors.As(err, &mbe):
		closeAfterReply(w, r)
		return httpError(fmt.Errorf("route %s: %w: body over max_request_body %d", h.Name, errBodyTooLarge, *h.MaxRequestBody))
	case errors.Is(err, jobs.ErrFull):
		w.Header().Set("Retry-After", "5")
		return httpError(fmt.Errorf("route %s: %w", h.Name, fmt.Errorf("%w: %w", errQueueFull, err)))
	case err != nil:
		w.Header().Set("Retry-After", "5")
		return httpError(fmt.Errorf("route %s: %w: %w", h.Name, errJobStore, err))
	}
	loc := jobURL(r, j.ID)
	hdr := w.Header()
	hdr.Set("Location", loc)
	hdr.Set("Preference-Applied", "respond-async")
	hdr.Set(headerJobState, string(j.State))
	return writeJSON(w, http.StatusAccepted, map[string]string{"id": j.ID, "state": string(j.State), "status_url": loc})
}

// jobStatus answers a job's status URL.
func (h *Handler) jobStatus(w http.ResponseWriter, r *http.Request, id string) error {
	j, ok := h.findJob(id)
	if !ok {
		return httpError(fmt.Errorf("route %s: %w", h.Name, errJobNotFound))
	}
	hdr := w.Header()
	hdr.Set(headerJobState, string(j.State))
	hdr.Set(headerAttempts, strconv.Itoa(j.Attempts))
	res := j.Result
	if res != nil && res.Exited {
		hdr.Set(trailerExitCode, strconv.FormatUint(uint64(res.ExitCode), 10))
	}
	switch j.State {
	case jobs.Succeeded:
		return h.writeResult(w, r, j)
	case jobs.Failed:
		if res.OOMKilled {
			hdr.Set(trailerError, "oom-killed")
		}
		status := res.Status
		if status < 500 {
			status = http.StatusBadGateway
		}
		return writeJSON(w, status, newJobDocument(j, true))
	case jobs.Queued, jobs.Running, jobs.Retrying:
		hdr.Set("Retry-After", "1")
		return writeJSON(w, http.StatusAccepted, newJobDocument(j, false))
	}
	return writeJSON(w, http.StatusInternalServerError, newJobDocument(j, false))
}

// writeResult sends a succeeded job's stored response.
func (h *Handler) writeResult(w http.ResponseWriter, r *http.Request, j *jobs.Job) error {
	f, err := h.async.q.OpenOutput(j.ID)
	if err != nil {
		return httpError(fmt.Errorf("route %s: %w: %w", h.Name, errJobStore, err))
	}
	defer f.Close()
	hdr := w.Header()
	for k, v := range j.Result.Header {
		hdr[k] = append([]string(nil), v...)
	}
	hdr.Set("Content-Length", strconv.FormatInt(j.Result.BodySize, 10))
	if j.Result.Truncated {
		hdr.Set(headerTruncated, "true")
	}
	w.WriteHeader(j.Result.Status)
	if r.Method == http.MethodHead {
		return nil
	}
	if _, err := io.Copy(w, f); err != nil {
		h.logger.Warn("client went away during a job's stored response",
			zap.String("route", h.Name), zap.String("job", j.ID), zap.Error(err))
		panic(http.ErrAbortHandler)
	}
	return nil
}

// cancelJob answers DELETE on a job's status URL: 204 once it is gone.
func (h *Handler) cancelJob(w http.ResponseWriter, id string) error {
	if !jobs.ValidID(id) {
		return httpError(fmt.Errorf("route %s: %w", h.Name, errJobNotFound))
	}
	found, err := h.async.q.Cancel(id)
	switch {
	case err != nil:
		return httpError(fmt.Errorf("route %s: %w: %w", h.Name, errJobStore, err))
	case !found:
		return httpError(fmt.Errorf("route %s: %w", h.Name, errJobNotFound))
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// findJob looks id up in the route's queue, reading the store first if no
// job ran yet since the start.
func (h *Handler) findJob(id string) (*jobs.Job, bool) {
	if !jobs.ValidID(id) || h.async.q.Open() != nil {
		return nil, false
	}
	return h.async.q.Get(id)
}

// run runs one attempt of a job with the handler of the config in force.
func (a *asyncQueue) run(ctx context.Context, at jobs.Attempt) jobs.Outcome {
	h := a.handler.Load()
	if h == nil {
		// Between configs: the queue is closing, or a new handler comes.
		<-ctx.Done()
		return jobs.Outcome{Failed: true, Result: jobs.Result{Error: "no config serves the route"}}
	}
	return h.runJob(ctx, at)
}

// asyncRun is one attempt of a job as its exchange sees it, found in the
// request's context: it supplies the stored environment and learns how the
// program ended.
type asyncRun struct {
	job     *jobs.Job
	attempt int
	ex      *exchange // set by newExchange
}

type asyncRunKey struct{}

// asyncRunOf returns the attempt r runs, or nil for a client's request.
func asyncRunOf(r *http.Request) *asyncRun {
	run, _ := r.Context().Value(asyncRunKey{}).(*asyncRun)
	return run
}

// noteExchange tells an attempt (if ex runs one) its exchange.
func noteExchange(ex *exchange) {
	if run := asyncRunOf(ex.r); run != nil {
		run.ex = ex
	}
}

// env is the attempt's environment: the stored CGI variables, the route's
// env, then SPAWN_ATTEMPT and SPAWN_JOB_ID.
func (run *asyncRun) env(routeEnv []string) []string {
	env := make([]string, 0, len(run.job.Env)+len(routeEnv)+2)
	env = append(env, run.job.Env...)
	env = append(env, routeEnv...)
	return append(env, "SPAWN_ATTEMPT="+strconv.Itoa(run.attempt), "SPAWN_JOB_ID="+run.job.ID)
}

// runJob runs one attempt of a job through the same steps as a request
// (Handler.run), with a request made from the stored job and a recorder
// that writes the response to the job's output.
func (h *Handler) runJob(ctx context.Context, at jobs.Attempt) jobs.Outcome {
	// A job waits for the image however long that takes, and for a
	// max_concurrent slot like any request.
	select {
	case <-h.route.ready:
	case <-ctx.Done():
		return jobs.Outcome{Failed: true, Result: jobs.Result{Error: ctx.Err().Error()}}
	}
	if h.limit != nil {
		if err := h.limit.Acquire(ctx, 1); err != nil {
			return jobs.Outcome{Failed: true, Result: jobs.Result{Error: err.Error()}}
		}
		defer h.limit.Release(1)
	}
	run := &asyncRun{job: at.Job, attempt: at.Number}
	u, err := url.ParseRequestURI(at.Job.URI)
	if err != nil {
		return jobs.Outcome{Failed: true, Result: jobs.Result{Status: http.StatusBadRequest, Error: err.Error()}}
	}
	req := (&http.Request{
		Method: at.Job.Method, URL: u, RequestURI: at.Job.URI,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{},
		Body: io.NopCloser(at.Body), ContentLength: at.Job.BodySize,
	}).WithContext(context.WithValue(ctx, asyncRunKey{}, run))
	rec := &resultRecorder{header: http.Header{}, out: at.Output}
	err, aborted := runCaught(h, rec, req)
	return run.outcome(rec, err, aborted)
}

// runCaught runs h.run, turning the abort of a response cut short into
// aborted.
func runCaught(h *Handler, w http.ResponseWriter, r *http.Request) (err error, aborted bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler { //nolint:errorlint // the sentinel is panicked as is
				panic(v)
			}
			aborted = true
		}
	}()
	return h.run(w, r), false
}

// outcome tells how the attempt ended: a failure is an error before the
// header, a response cut short, or an exit other than 0.
func (run *asyncRun) outcome(rec *resultRecorder, err error, aborted bool) jobs.Outcome {
	var res jobs.Result
	if rec.wrote {
		res.Status, res.Header = rec.status, rec.sent
	}
	if err != nil {
		res.Status = http.StatusBadGateway
		if he, ok := errors.AsType[caddyhttp.HandlerError](err); ok {
			res.Status = he.StatusCode
		}
		res.Error = err.Error()
	}
	if ex := run.ex; ex != nil && ex.proc != nil {
		select {
		case <-ex.proc.Done():
			res.Exited, res.ExitCode = true, ex.proc.ExitCode()
			res.OOMKilled = res.ExitCode != 0 && ex.proc.OOMKilled()
		default:
		}
		if ex.stderr != nil {
			res.StderrTail, _ = ex.stderr.String()
		}
	}
	failed := err != nil || aborted || !res.Exited || res.ExitCode != 0
	if failed && res.Error == "" {
		switch {
		case aborted:
			res.Error = "response cut short (timeout, body or response over its limit)"
		case res.Exited:
			res.Error = describeExit(res.ExitCode)
		default:
			res.Error = "function did not exit"
		}
	}
	return jobs.Outcome{Result: res, Failed: failed}
}

// resultRecorder is the ResponseWriter of a job's attempt: it keeps the
// status and headers as sent and writes the body to the job's output,
// which caps it.
type resultRecorder struct {
	header http.Header
	out    io.Writer
	status int
	sent   http.Header
	wrote  bool
}

func (rr *resultRecorder) Header() http.Header { return rr.header }

func (rr *resultRecorder) WriteHeader(code int) {
	if rr.wrote {
		return
	}
	rr.wrote, rr.status = true, code
	rr.sent = rr.header.Clone()
	delete(rr.sent, "Trailer")
}

func (rr *resultRecorder) Write(p []byte) (int, error) {
	if !rr.wrote {
		rr.WriteHeader(http.StatusOK)
	}
	return rr.out.Write(p)
}

// jobDocument is the JSON a status URL answers with while a job is pending
// or once it failed.
type jobDocument struct {
	ID         string     `json:"id"`
	State      string     `json:"state"`
	Attempts   int        `json:"attempts"`
	Created    time.Time  `json:"created"`
	NextRun    *time.Time `json:"next_run,omitempty"`
	Finished   *time.Time `json:"finished,omitempty"`
	Status     int        `json:"status,omitempty"`
	ExitCode   *uint32    `json:"exit_code,omitempty"`
	OOMKilled  bool       `json:"oom_killed,omitempty"`
	Error      string     `json:"error,omitempty"`
	StderrTail *string    `json:"stderr_tail,omitempty"`
}

// newJobDocument describes j; final adds the last attempt's outcome.
func newJobDocument(j *jobs.Job, final bool) jobDocument {
	doc := jobDocument{ID: j.ID, State: string(j.State), Attempts: j.Attempts, Created: j.Created}
	if !j.NextRun.IsZero() {
		doc.NextRun = &j.NextRun
	}
	if res := j.Result; res != nil {
		doc.Error = res.Error
		if final {
			doc.Finished = &j.Finished
			doc.Status = res.Status
			if res.Exited {
				doc.ExitCode = &res.ExitCode
			}
			doc.OOMKilled = res.OOMKilled
			doc.StderrTail = &res.StderrTail
		}
	}
	return doc
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding response: %w", err)
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return nil
}

// jobURL is the status URL of job id on the route that serves r: the
// path the client asked for, before Caddy's rewrites, with the job's query.
func jobURL(r *http.Request, id string) string {
	p := r.URL.EscapedPath()
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
		p = orig.URL.EscapedPath()
	}
	return p + "?" + jobQueryKey + "=" + id
}

// prefersAsync reports whether the request asks for an asynchronous
// answer: a respond-async preference (RFC 7240 §4.1) in any Prefer field.
func prefersAsync(h http.Header) bool {
	for _, field := range h.Values("Prefer") {
		for pref := range strings.SplitSeq(field, ",") {
			name, _, _ := strings.Cut(pref, ";")
			name, _, _ = strings.Cut(name, "=")
			if strings.EqualFold(strings.TrimSpace(name), "respond-async") {
				return true
			}
		}
	}
	return false
}

// Interface guards
var (
	_ caddy.Destructor    = (*asyncQueue)(nil)
	_ http.ResponseWriter = (*resultRecorder)(nil)
)
