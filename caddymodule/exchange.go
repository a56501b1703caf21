package caddymodule

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-spawn/caddy-spawn/spawner"
)

const (
	stderrTailBytes = 4 << 10
	copyBufferSize  = 32 << 10
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// exchange is the state of one request served by one container: what the
// steps of Handler.ServeHTTP share. Its steps run in order — acquire,
// begin, readHead, then writeHeader, streamBody and finalize, or
// failBeforeHeader — and end runs last, whatever happened.
type exchange struct {
	h  *Handler
	w  http.ResponseWriter
	r  *http.Request
	rc *http.ResponseController
	// writeDeadline is set when the response's writes have the route's
	// deadline (taken off again in end).
	writeDeadline bool
	ctx           context.Context // the request's, bounded by the handler's Timeout

	proc       process
	stopWatch  func() bool   // stops killing proc when ctx ends
	stderr     *stderrTail   // the program's stderr, bounded
	stderrDone chan struct{} // closed when stderr ends
	// bodyTooLarge is set by feedStdin, before it kills the container,
	// when the body goes over max_request_body.
	bodyTooLarge atomic.Bool
	stdout       *bufio.Reader
	stdoutEOF    bool    // all of stdout was read
	buf          *[]byte // from bufPool
	head         cgiHead
	begun        time.Time // when the program was given the request
}

// cutShort says why a response whose header is out cannot end cleanly: the
// Warn message and its fields.
type cutShort struct {
	msg    string
	fields []zap.Field
}

func newExchange(ctx context.Context, h *Handler, w http.ResponseWriter, r *http.Request) *exchange {
	// The program may answer while it still reads the body (a filter such as
	// cat does): HTTP/1 needs full duplex for that; HTTP/2 and 3 have it.
	rc := http.NewResponseController(w)
	_ = rc.EnableFullDuplex()
	ex := &exchange{h: h, w: w, r: r, rc: rc, ctx: ctx}
	noteExchange(ex)
	return ex
}

// acquire gets a started container for the request: warm from the pool,
// or cold.
func (ex *exchange) acquire() error {
	began := time.Now()
	// A new container may have to wait for one of the app's max_containers.
	ctx := spawner.WithSlotWait(ex.ctx, time.Duration(ex.h.QueueTimeout))
	proc, warm, err := ex.h.containers.acquire(ctx)
	switch {
	case errors.Is(err, spawner.ErrAtCapacity):
		ex.w.Header().Set("Retry-After", "1")
		return httpError(fmt.Errorf("route %s: %w", ex.h.Name, err))
	case errors.Is(err, errImageNotReady):
		ex.w.Header().Set("Retry-After", "5")
		return httpError(fmt.Errorf("route %s: %w", ex.h.Name, err))
	case err != nil:
		if errors.Is(err, spawner.ErrUnavailable) || errors.Is(err, spawner.ErrClosed) {
			ex.w.Header().Set("Retry-After", "5")
		}
		return httpError(ex.causeOf(fmt.Errorf("%w: %w", errStartFailed, err)))
	}
	ex.proc = proc
	ex.recordStart(warm, time.Since(began))
	return nil
}

// begin starts the program: it arms the kill on timeout or client gone,
// collects stderr, sends the request's environment and streams the body to
// stdin.
func (ex *exchange) begin() error {
	p := ex.proc
	// Kill the container the moment the request times out or the client
	// goes away; its stdout then ends and the copy returns.
	ex.stopWatch = context.AfterFunc(ex.ctx, func() { p.Kill(context.Background()) })
	ex.stderr = newStderrTail(stderrTailBytes)
	ex.stderrDone = make(chan struct{})
	go func() {
		_, _ = io.Copy(ex.stderr, p.Stderr())
		close(ex.stderrDone)
	}()
	ex.begun = time.Now()
	if err := p.Begin(ex.requestEnv()); err != nil {
		return httpError(ex.causeOf(fmt.Errorf("%w: %w", errStartFailed, err)))
	}
	go ex.feedStdin(*ex.h.MaxRequestBody)
	ex.buf = bufPool.Get().(*[]byte)
	ex.stdout = bufio.NewReaderSize(p.Stdout(), copyBufferSize)
	return nil
}

// readHead reads the response's head: the CGI header block, or nothing in
// raw mode but the first byte.
func (ex *exchange) readHead() error {
	var err error
	if ex.h.Output == outputRaw {
		ex.head = cgiHead{Status: http.StatusOK, Header: make(http.Header)}
		if _, err = ex.stdout.Peek(1); errors.Is(err, io.EOF) {
			err = errNoOutput
		}
	} else {
		ex.head, err = readCGIHead(ex.stdout)
		if len(ex.head.Dropped) > 0 {
			if ce := ex.h.logger.Check(zap.DebugLevel, "dropped reserved header fields from the program"); ce != nil {
				ce.Write(zap.Strings("fields", ex.head.Dropped))
			}
		}
	}
	if limit := ex.h.MaxResponseBytes; err == nil && limit > 0 {
		// A body announced too large would only be cut short: say so now,
		// while a status can still tell it.
		if n, perr := strconv.ParseInt(ex.head.Header.Get("Content-Length"), 10, 64); perr == nil && n > limit {
			err = fmt.Errorf("%w: Content-Length %d over max_response_bytes %d", errResponseTooLarge, n, limit)
		}
	}
	return err
}

// failBeforeHeader ends a request that produced no valid header: it kills
// the container, works out why, logs the program's stderr and returns the
// error for Caddy to answer with.
func (ex *exchange) failBeforeHeader(err error) error {
	p := ex.proc
	if errors.Is(err, errNoOutput) {
		// The program closed stdout: wait for its exit to tell why.
		select {
		case <-p.Done():
		case <-ex.ctx.Done():
		}
	}
	p.Kill(context.Background())
	waitBounded(p.Done(), 2*time.Second)
	waitBounded(ex.stderrDone, time.Second)

	cause := ex.causeBeforeHeader(err)
	code := uint32(0)
	select {
	case <-p.Done():
		code = p.ExitCode()
	default:
	}
	ex.logStderr(code)
	if errors.Is(cause, errBodyTooLarge) {
		closeAfterReply(ex.w, ex.r)
	}
	return httpError(fmt.Errorf("route %s, container %s: %w", ex.h.Name, p.ContainerID(), cause))
}

// causeBeforeHeader tells why a request got no valid header, given the
// error reading it.
func (ex *exchange) causeBeforeHeader(err error) error {
	p := ex.proc
	var mh malformedHeaderError
	switch {
	case ex.bodyTooLarge.Load():
		// We killed it: the body went over the limit.
		return fmt.Errorf("%w: body over max_request_body %d", errBodyTooLarge, *ex.h.MaxRequestBody)
	case ex.ctx.Err() != nil:
		return ex.causeOf(ex.ctx.Err())
	case errors.As(err, &mh):
		return fmt.Errorf("%w: %w", errBadOutput, err)
	case errors.Is(err, errNoOutput):
		if p.ExitCode() != 0 && p.OOMKilled() {
			return fmt.Errorf("%w (%s; out of memory: the memory limit killed it)", errFailedNoOutput, describeExit(p.ExitCode()))
		}
		return fmt.Errorf("%w (%s)", errFailedNoOutput, describeExit(p.ExitCode()))
	case errors.Is(err, errResponseTooLarge):
		return err
	default:
		return fmt.Errorf("%w: %w", errBadOutput, err)
	}
}

// writeHeader sends the status and headers, declaring the trailers.
func (ex *exchange) writeHeader() {
	hdr := ex.w.Header()
	maps.Copy(hdr, ex.head.Header)
	hdr.Add("Trailer", trailerExitCode)
	hdr.Add("Trailer", trailerError)
	if ex.h.ReportUsage {
		hdr.Add("Trailer", trailerCPUMs)
		hdr.Add("Trailer", trailerMemoryPeak)
	}
	// A client that stops reading must not hold the container and its
	// max_concurrent slot past the route's timeout: writes fail at the
	// deadline (HTTP/1 and HTTP/2), and the response is cut short.
	if dl, ok := ex.ctx.Deadline(); ok {
		if err := ex.rc.SetWriteDeadline(dl); err == nil {
			ex.writeDeadline = true
		}
	}
	ex.w.WriteHeader(ex.head.Status)
	_ = ex.rc.Flush()
}

// streamBody copies the body to the client and waits for the program's
// exit. It returns why the response must be cut short, or nil.
func (ex *exchange) streamBody() *cutShort {
	if cut := ex.copyResponse(); cut != nil {
		return cut
	}
	if ex.bodyTooLarge.Load() {
		// Killed for its request body after the header went out.
		return &cutShort{msg: "response cut short", fields: []zap.Field{
			zap.String("reason", "request body over max_request_body"),
			zap.Int64("max_request_body", *ex.h.MaxRequestBody),
		}}
	}
	select {
	case <-ex.proc.Done():
	case <-ex.ctx.Done():
	}
	if ex.ctx.Err() != nil {
		reason := "timeout"
		if ex.r.Context().Err() != nil {
			reason = "client went away"
		}
		return &cutShort{msg: "response cut short", fields: []zap.Field{zap.String("reason", reason)}}
	}
	return nil
}

// copyResponse copies stdout to the client, flushing whenever the program
// pauses, up to max_response_bytes.
func (ex *exchange) copyResponse() *cutShort {
	limit := ex.h.MaxResponseBytes
	buf := *ex.buf
	var sent int64
	for {
		n, rerr := ex.stdout.Read(buf)
		over := limit > 0 && sent+int64(n) > limit
		if over {
			n = int(limit - sent)
		}
		if n > 0 {
			if _, werr := ex.w.Write(buf[:n]); werr != nil {
				return &cutShort{msg: "client went away during response", fields: []zap.Field{zap.Error(werr)}}
			}
			sent += int64(n)
			if ex.stdout.Buffered() == 0 || over {
				_ = ex.rc.Flush()
			}
		}
		if over {
			// Only an aborted response tells the client it is incomplete:
			// a trailer would need a clean end, which looks complete.
			return &cutShort{msg: "response cut short", fields: []zap.Field{
				zap.String("reason", "response over max_response_bytes"),
				zap.Int64("max_response_bytes", limit),
			}}
		}
		if rerr != nil {
			ex.stdoutEOF = true
			return nil
		}
	}
}

// abort ends a response whose header is already out, the one way that
// happens: it kills the container, logs why at Warn and aborts the
// response as reverse_proxy does (HTTP/1.1: the connection closes before
// the last chunk; HTTP/2 and 3: the stream is reset), so the client can
// tell it is incomplete. It never returns.
func (ex *exchange) abort(cut *cutShort) {
	ex.proc.Kill(context.Background())
	fields := append([]zap.Field{
		zap.String("route", ex.h.Name),
		zap.String("container", ex.proc.ContainerID()),
	}, cut.fields...)
	ex.h.logger.Warn(cut.msg, fields...)
	panic(http.ErrAbortHandler)
}

// finalize ends a clean response: the exit code (and an OOM kill) in the
// trailers, metrics, and the program's stderr in the log.
func (ex *exchange) finalize() {
	p := ex.proc
	code := p.ExitCode()
	hdr := ex.w.Header()
	hdr.Set(trailerExitCode, strconv.FormatUint(uint64(code), 10))
	if code != 0 && p.OOMKilled() {
		hdr.Set(trailerError, "oom-killed")
		ex.h.logger.Warn("function killed by its memory limit after the response began",
			zap.String("route", ex.h.Name), zap.String("container", p.ContainerID()), zap.Int64("memory", ex.h.Memory))
	}
	spawnMetrics.exits.WithLabelValues(ex.h.Name, exitCodeLabel(code)).Inc()
	ex.recordUsage()
	waitBounded(ex.stderrDone, time.Second)
	ex.logStderr(code)
}

// end gives the container back, whatever happened. A response that ended
// early leaves the program's output unread, and the shim reports no exit
// of a killed container while its stdout waits for a reader: drain it, off
// the request, so teardown doesn't stall.
func (ex *exchange) end() {
	if ex.writeDeadline {
		// Without a server WriteTimeout, net/http keeps a connection's
		// write deadline for its next request: take ours off.
		_ = ex.rc.SetWriteDeadline(time.Time{})
	}
	if ex.stdout != nil && !ex.stdoutEOF {
		br := ex.stdout
		go func() { _, _ = io.Copy(io.Discard, br) }()
	}
	if ex.buf != nil {
		bufPool.Put(ex.buf)
	}
	if ex.stopWatch != nil {
		ex.stopWatch()
	}
	ex.h.containers.release(ex.proc)
}

// feedStdin streams the request body into the program's stdin and closes
// it at EOF. It may outlive ServeHTTP when the program stops reading early;
// closing stdin (done by release) ends it. With limit > 0 it passes at most
// limit bytes: if the body has more, it sets bodyTooLarge and kills the
// container, leaving stdin open so the program can't take the truncated
// body for a whole one.
func (ex *exchange) feedStdin(limit int64) {
	p, r := ex.proc, ex.r
	if r.Body != nil && r.Body != http.NoBody {
		var body io.Reader = r.Body
		if limit > 0 {
			body = &limitedBody{r: r.Body, left: limit}
		}
		bp := bufPool.Get().(*[]byte)
		_, err := io.CopyBuffer(writerOnly{p.Stdin()}, body, *bp)
		bufPool.Put(bp)
		// Caddy's request_body max_size ends the body the same way.
		var mbe *http.MaxBytesError
		if errors.Is(err, errBodyTooLarge) || errors.As(err, &mbe) {
			ex.bodyTooLarge.Store(true)
			p.Kill(context.Background())
			return
		}
		if err != nil {
			if ce := ex.h.logger.Check(zap.DebugLevel, "request body not fully delivered"); ce != nil {
				ce.Write(zap.String("route", ex.h.Name), zap.String("container", p.ContainerID()), zap.Error(err))
			}
		}
	}
	_ = p.CloseStdin(context.Background())
}

// recordStart reports how the container was obtained: metrics, the
// {http.spawn.*} placeholders and access-log fields.
func (ex *exchange) recordStart(warm bool, took time.Duration) {
	name, id, ctx := ex.h.Name, ex.proc.ContainerID(), ex.r.Context()
	startType, result := "cold", "miss"
	if warm {
		startType, result = "warm", "hit"
	}
	spawnMetrics.claims.WithLabelValues(name, result).Inc()
	if !warm && ex.h.waits != nil {
		ex.h.waits.observeCold(took)
	}
	spawnMetrics.startSeconds.WithLabelValues(name, startType).Observe(took.Seconds())
	if repl, ok := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.spawn.start_type", startType)
		repl.Set("http.spawn.start_duration", took)
		repl.Set("http.spawn.start_duration_ms", float64(took)/float64(time.Millisecond))
		repl.Set("http.spawn.container", id)
	}
	if extra, ok := ctx.Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Add(zap.String("spawn_start", startType))
		extra.Add(zap.Duration("spawn_start_duration", took))
		extra.Add(zap.String("spawn_container", id))
	}
}

// recordUsage reports what the container used for the request, from its
// cgroup: metrics, the {http.spawn.*} placeholders, access-log fields and,
// with report_usage, the trailers.
func (ex *exchange) recordUsage() {
	run := time.Since(ex.begun)
	u, ok := ex.proc.Usage()
	if !ok {
		return
	}
	cpuMs := float64(u.CPU) / float64(time.Millisecond)
	name, ctx := ex.h.Name, ex.r.Context()
	spawnMetrics.cpuSeconds.WithLabelValues(name).Observe(u.CPU.Seconds())
	spawnMetrics.memoryPeak.WithLabelValues(name).Observe(float64(u.MemoryPeak))
	if repl, ok := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.spawn.cpu_ms", cpuMs)
		repl.Set("http.spawn.memory_peak_bytes", u.MemoryPeak)
		repl.Set("http.spawn.run_ms", float64(run)/float64(time.Millisecond))
	}
	if extra, ok := ctx.Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Add(zap.Float64("spawn_cpu_ms", cpuMs))
		extra.Add(zap.Int64("spawn_memory_peak_bytes", u.MemoryPeak))
		extra.Add(zap.Float64("spawn_run_ms", float64(run)/float64(time.Millisecond)))
	}
	if ex.h.ReportUsage {
		hdr := ex.w.Header()
		hdr.Set(trailerCPUMs, strconv.FormatFloat(cpuMs, 'f', 1, 64))
		hdr.Set(trailerMemoryPeak, strconv.FormatInt(u.MemoryPeak, 10))
	}
}

// requestEnv is the environment sent to the init: CGI variables, then the
// route's env, which wins. An async job's attempt has its CGI variables
// stored (asyncRun.env).
func (ex *exchange) requestEnv() []string {
	if run := asyncRunOf(ex.r); run != nil {
		return run.env(ex.h.env)
	}
	return append(ex.cgiEnv(), ex.h.env...)
}

// cgiEnv is the request's CGI meta-variables.
func (ex *exchange) cgiEnv() []string {
	r := ex.r
	cr := cgiRequest{
		ScriptName: ex.h.ScriptName, ServerSoftware: ex.h.software,
		PassAuthorization: ex.h.PassAuthorization,
	}
	cr.ClientIP, _ = caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	cr.TrustedProxy, _ = caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok {
		cr.RequestURI = orig.RequestURI
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		if user, ok := repl.GetString("http.auth.user.id"); ok && user != "" {
			cr.RemoteUser = user
		}
	}
	return cgiEnv(r, cr)
}

// causeOf tells a timeout from a client that went away.
func (ex *exchange) causeOf(err error) error {
	switch {
	case ex.r.Context().Err() != nil:
		return fmt.Errorf("%w: %w", errClientGone, err)
	case errors.Is(ex.ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%w after %s: %w", errTimeout, time.Duration(ex.h.Timeout), err)
	}
	return err
}

// logStderr logs what the program wrote to stderr, bounded, never mixed
// into the response.
func (ex *exchange) logStderr(code uint32) {
	text, total := ex.stderr.String()
	if total == 0 {
		return
	}
	lvl := zap.InfoLevel
	if code != 0 {
		lvl = zap.WarnLevel
	}
	if ce := ex.h.logger.Check(lvl, "function stderr"); ce != nil {
		ce.Write(
			zap.String("route", ex.h.Name),
			zap.String("image", ex.h.Image),
			zap.String("container", ex.proc.ContainerID()),
			zap.Uint32("exit_code", code),
			zap.Int64("stderr_bytes", total),
			zap.String("stderr", text))
	}
}

// closeAfterReply marks an HTTP/1 connection for closing after a response
// that leaves the request body unread. Without it, Go's server would first
// try to read up to 256 KiB of the body to keep the connection, waiting on
// a client that waits for the response (Caddy wraps the body, which hides
// its size). HTTP/2 and 3 need nothing: a stream ends on its own.
func closeAfterReply(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
}

// limitedBody passes at most left more bytes of r, then fails with
// errBodyTooLarge if r has more.
type limitedBody struct {
	r    io.Reader
	left int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	// One byte more than allowed tells "exactly at the limit" from "over".
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	if int64(n) > l.left {
		n = int(l.left)
		l.left = 0
		return n, errBodyTooLarge
	}
	l.left -= int64(n)
	return n, err
}

// describeExit says how a program ended, from its exit code (128+n for
// signal n, as a shell reports it).
func describeExit(code uint32) string {
	if code > 128 && code < 128+65 {
		sig := syscall.Signal(code - 128)
		return fmt.Sprintf("exit code %d: killed by signal %d (%s)", code, code-128, sig)
	}
	return fmt.Sprintf("exit code %d", code)
}

func waitBounded(ch <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

// writerOnly hides ReaderFrom so io.CopyBuffer uses our pooled buffer.
type writerOnly struct{ io.Writer }

// stderrTail keeps the last max bytes written to it and counts the rest.
type stderrTail struct {
	mu    sync.Mutex
	max   int
	buf   []byte
	total int64
}

func newStderrTail(max int) *stderrTail { return &stderrTail{max: max} }

func (t *stderrTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total += int64(len(p))
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

// String returns the kept tail and the total byte count.
func (t *stderrTail) String() (string, int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf), t.total
}
