package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sync/semaphore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-spawn/caddy-spawn/spawner"
)

// fakeProcess is a process whose program is a Go function: it runs once
// Begin is called, reads stdin and writes stdout through pipes, and its
// return value is the exit code. Kill ends it at once with 137, as SIGKILL
// does: stdout and stderr end, stdin stops taking bytes.
type fakeProcess struct {
	program  func(p *fakeProcess) uint32
	oom      bool           // what OOMKilled reports
	beginErr error          // what Begin returns
	usage    *spawner.Usage // what Usage reports; nil: unknown

	stdinR, stdoutR, stderrR *io.PipeReader
	stdinW, stdoutW, stderrW *io.PipeWriter

	done   chan struct{}
	once   sync.Once
	code   uint32
	killed atomic.Bool
	env    []string // as given to Begin
}

func newFakeProcess(program func(p *fakeProcess) uint32) *fakeProcess {
	p := &fakeProcess{program: program, done: make(chan struct{})}
	p.stdinR, p.stdinW = io.Pipe()
	p.stdoutR, p.stdoutW = io.Pipe()
	p.stderrR, p.stderrW = io.Pipe()
	return p
}

func (p *fakeProcess) ContainerID() string { return "caddy-spawn-fn-0123abcd" }

func (p *fakeProcess) Begin(env []string) error {
	if p.beginErr != nil {
		return p.beginErr
	}
	p.env = env
	go func() { p.exit(p.program(p)) }()
	return nil
}

func (p *fakeProcess) Stdin() io.Writer                 { return p.stdinW }
func (p *fakeProcess) CloseStdin(context.Context) error { return p.stdinW.Close() }
func (p *fakeProcess) Stdout() io.Reader                { return p.stdoutR }
func (p *fakeProcess) Stderr() io.Reader                { return p.stderrR }
func (p *fakeProcess) Done() <-chan struct{}            { return p.done }
func (p *fakeProcess) ExitCode() uint32                 { return p.code }
func (p *fakeProcess) OOMKilled() bool                  { return p.oom }

func (p *fakeProcess) Usage() (spawner.Usage, bool) {
	if p.usage == nil {
		return spawner.Usage{}, false
	}
	return *p.usage, true
}

func (p *fakeProcess) Kill(context.Context) {
	p.killed.Store(true)
	p.exit(137)
}

func (p *fakeProcess) exit(code uint32) {
	p.once.Do(func() {
		p.code = code
		p.stdoutW.Close()
		p.stderrW.Close()
		p.stdinR.CloseWithError(errors.New("program exited"))
		close(p.done)
	})
}

// write is the program writing s to stdout; false once it was killed.
func (p *fakeProcess) write(s string) bool {
	_, err := io.WriteString(p.stdoutW, s)
	return err == nil
}

// waitKilled is a program that never ends on its own.
func (p *fakeProcess) waitKilled() uint32 {
	<-p.done
	return 0
}

// fakeSource hands out one fakeProcess, or fails with err.
type fakeSource struct {
	proc     *fakeProcess
	err      error
	acquired atomic.Int32
	released atomic.Int32
}

func (s *fakeSource) acquire(context.Context) (process, bool, error) {
	s.acquired.Add(1)
	if s.err != nil {
		return nil, false, s.err
	}
	return s.proc, true, nil
}

func (s *fakeSource) release(process) { s.released.Add(1) }

// handlerTest is a Handler serving from a fake source, as Provision leaves
// it, with its log observed.
type handlerTest struct {
	h    *Handler
	src  *fakeSource
	logs *observer.ObservedLogs
}

func newHandlerTest(t *testing.T, program func(p *fakeProcess) uint32, modify func(h *Handler)) *handlerTest {
	t.Helper()
	if err := initMetrics(prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	src := &fakeSource{proc: newFakeProcess(program)}
	h := &Handler{Image: "localhost/fn:1", Env: map[string]string{"ROUTE_VAR": "route"}, containers: src, waits: newWaitEstimate(), logger: zap.New(core)}
	if modify != nil {
		modify(h)
	}
	h.setDefaults()
	h.env = resolveEnv(caddy.NewReplacer(), h.Env)
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	return &handlerTest{h: h, src: src, logs: logs}
}

// serve runs ServeHTTP and returns its error, or what it panicked with.
func (ht *handlerTest) serve(w http.ResponseWriter, r *http.Request) (panicked any, err error) {
	defer func() { panicked = recover() }()
	return nil, ht.h.ServeHTTP(w, r, nil)
}

// checkEnded checks what every request leaves behind: its container given
// back once, and killed unless it ended on its own.
func (ht *handlerTest) checkEnded(t *testing.T, wantKilled bool) {
	t.Helper()
	if got := ht.src.released.Load(); got != ht.src.acquired.Load() {
		t.Errorf("%d containers acquired, %d released", ht.src.acquired.Load(), got)
	}
	if got := ht.src.proc.killed.Load(); got != wantKilled {
		t.Errorf("container killed: %t, want %t", got, wantKilled)
	}
}

// checkCutShort checks that the one abort path ran: ServeHTTP panicked
// with http.ErrAbortHandler and logged msg at Warn with the given reason.
func (ht *handlerTest) checkCutShort(t *testing.T, err error, panicked any, msg, reason string) {
	t.Helper()
	if err != nil || panicked != http.ErrAbortHandler {
		t.Fatalf("ServeHTTP = %v, panic %v; want a panic with http.ErrAbortHandler", err, panicked)
	}
	entries := ht.logs.FilterMessage(msg).All()
	if len(entries) != 1 || entries[0].Level != zap.WarnLevel {
		t.Fatalf("log has %d Warn entries %q, want 1; all: %v", len(entries), msg, ht.logs.All())
	}
	if reason != "" && entries[0].ContextMap()["reason"] != reason {
		t.Errorf("logged reason %v, want %q", entries[0].ContextMap()["reason"], reason)
	}
}

// checkHandlerError checks that err is a caddyhttp.HandlerError with
// status and that it wraps want (when set).
func checkHandlerError(t *testing.T, err error, panicked any, status int, want error) {
	t.Helper()
	if panicked != nil {
		t.Fatalf("ServeHTTP panicked: %v", panicked)
	}
	var he caddyhttp.HandlerError
	if !errors.As(err, &he) || he.StatusCode != status {
		t.Fatalf("ServeHTTP = %v, want a HandlerError with status %d", err, status)
	}
	if want != nil && !errors.Is(err, want) {
		t.Errorf("error %v does not wrap %v", err, want)
	}
}

// TestServeHTTP covers requests that end cleanly or before any header: the
// response a program's output makes, and the status of each failure.
func TestServeHTTP(t *testing.T) {
	for _, tc := range []struct {
		name        string
		modify      func(h *Handler)
		program     func(p *fakeProcess) uint32
		oom         bool
		body        string
		wantStatus  int
		wantErr     error  // for a failure: the sentinel it wraps
		wantErrText string // for a failure: part of its message
		wantBody    string
		wantHeader  map[string]string
		wantTrailer map[string]string
		wantKilled  bool
	}{
		{
			name: "status and headers",
			program: func(p *fakeProcess) uint32 {
				p.write("Status: 201 Created\r\nX-Fn: yes\r\nContent-Type: text/plain\r\n\r\nhello")
				return 0
			},
			wantStatus: http.StatusCreated, wantBody: "hello",
			wantHeader:  map[string]string{"X-Fn": "yes", "Content-Type": "text/plain"},
			wantTrailer: map[string]string{trailerExitCode: "0", trailerError: ""},
		},
		{
			name:       "location without status redirects",
			program:    func(p *fakeProcess) uint32 { p.write("Location: /elsewhere\n\n"); return 0 },
			wantStatus: http.StatusFound, wantHeader: map[string]string{"Location": "/elsewhere"},
		},
		{
			name:       "location with a status",
			program:    func(p *fakeProcess) uint32 { p.write("Status: 301\nLocation: https://example.com/\n\n"); return 0 },
			wantStatus: http.StatusMovedPermanently, wantHeader: map[string]string{"Location": "https://example.com/"},
		},
		{
			name:       "no status, no location",
			program:    func(p *fakeProcess) uint32 { p.write("X-A: b\n\nok"); return 0 },
			wantStatus: http.StatusOK, wantBody: "ok",
		},
		{
			name:       "raw output",
			modify:     func(h *Handler) { h.Output = outputRaw },
			program:    func(p *fakeProcess) uint32 { p.write("Status: 500\n\nbody"); return 0 },
			wantStatus: http.StatusOK, wantBody: "Status: 500\n\nbody",
		},
		{
			name: "request body to stdin",
			program: func(p *fakeProcess) uint32 {
				in, _ := io.ReadAll(p.stdinR)
				p.write("\n" + strings.ToUpper(string(in)))
				return 0
			},
			body:       "shout",
			wantStatus: http.StatusOK, wantBody: "SHOUT",
		},
		{
			name:        "exit code in the trailer",
			program:     func(p *fakeProcess) uint32 { p.write("\npartial work"); return 3 },
			wantStatus:  http.StatusOK,
			wantBody:    "partial work",
			wantTrailer: map[string]string{trailerExitCode: "3", trailerError: ""},
		},
		{
			name:        "killed by its memory limit after the header",
			program:     func(p *fakeProcess) uint32 { p.write("\nsome"); return 137 },
			oom:         true,
			wantStatus:  http.StatusOK,
			wantBody:    "some",
			wantTrailer: map[string]string{trailerExitCode: "137", trailerError: "oom-killed"},
		},
		{
			name:       "malformed head",
			program:    func(p *fakeProcess) uint32 { p.write("this is no header\n\nbody"); return 0 },
			wantStatus: http.StatusBadGateway, wantErr: errBadOutput, wantErrText: "missing colon",
			wantKilled: true,
		},
		{
			name:       "head cut off by the exit",
			program:    func(p *fakeProcess) uint32 { p.write("Content-Type: text/plain\n"); return 0 },
			wantStatus: http.StatusBadGateway, wantErr: errBadOutput, wantErrText: "truncated header block",
			wantKilled: true,
		},
		{
			name:       "bad status",
			program:    func(p *fakeProcess) uint32 { p.write("Status: 600\n\n"); return 0 },
			wantStatus: http.StatusBadGateway, wantErr: errBadOutput, wantErrText: "out of range",
			wantKilled: true,
		},
		{
			name:       "non-zero exit before output",
			program:    func(*fakeProcess) uint32 { return 3 },
			wantStatus: http.StatusBadGateway, wantErr: errFailedNoOutput, wantErrText: "(exit code 3)",
			wantKilled: true,
		},
		{
			name:       "killed by its memory limit before output",
			program:    func(*fakeProcess) uint32 { return 137 },
			oom:        true,
			wantStatus: http.StatusBadGateway, wantErr: errFailedNoOutput, wantErrText: "out of memory",
			wantKilled: true,
		},
		{
			name:       "raw output, none written",
			modify:     func(h *Handler) { h.Output = outputRaw },
			program:    func(*fakeProcess) uint32 { return 0 },
			wantStatus: http.StatusBadGateway, wantErr: errFailedNoOutput, wantErrText: "(exit code 0)",
			wantKilled: true,
		},
		{
			name:       "announced body over max_response_bytes",
			modify:     func(h *Handler) { h.MaxResponseBytes = 10 },
			program:    func(p *fakeProcess) uint32 { p.write("Content-Length: 11\n\n"); return p.waitKilled() },
			wantStatus: http.StatusBadGateway, wantErr: errResponseTooLarge, wantErrText: "Content-Length 11 over max_response_bytes 10",
			wantKilled: true,
		},
		{
			name:       "announced body at max_response_bytes",
			modify:     func(h *Handler) { h.MaxResponseBytes = 2 },
			program:    func(p *fakeProcess) uint32 { p.write("Content-Length: 2\n\nok"); return 0 },
			wantStatus: http.StatusOK, wantBody: "ok",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ht := newHandlerTest(t, tc.program, tc.modify)
			ht.src.proc.oom = tc.oom
			req := httptest.NewRequest(http.MethodPost, "/fn", strings.NewReader(tc.body))
			rec := httptest.NewRecorder()
			panicked, err := ht.serve(rec, req)
			if tc.wantErr != nil {
				checkHandlerError(t, err, panicked, tc.wantStatus, tc.wantErr)
				if !strings.Contains(err.Error(), tc.wantErrText) {
					t.Errorf("error %q does not contain %q", err, tc.wantErrText)
				}
				if rec.Flushed || rec.Body.Len() > 0 {
					t.Errorf("a failure wrote a response itself: %d bytes", rec.Body.Len())
				}
			} else {
				if err != nil || panicked != nil {
					t.Fatalf("ServeHTTP = %v, panic %v", err, panicked)
				}
				checkResponse(t, rec.Result(), tc.wantStatus, tc.wantBody, tc.wantHeader, tc.wantTrailer)
			}
			ht.checkEnded(t, tc.wantKilled)
		})
	}
}

func checkResponse(t *testing.T, resp *http.Response, status int, body string, header, trailer map[string]string) {
	t.Helper()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status || string(got) != body {
		t.Errorf("response %d %q, want %d %q", resp.StatusCode, got, status, body)
	}
	for k, v := range header {
		if resp.Header.Get(k) != v {
			t.Errorf("header %s: %q, want %q", k, resp.Header.Get(k), v)
		}
	}
	for k, v := range trailer {
		if resp.Trailer.Get(k) != v {
			t.Errorf("trailer %s: %q, want %q", k, resp.Trailer.Get(k), v)
		}
	}
}

// TestServeHTTPRequestEnv checks that the program gets the CGI variables
// and the route's env.
func TestServeHTTPRequestEnv(t *testing.T) {
	ht := newHandlerTest(t, func(p *fakeProcess) uint32 { p.write("\n"); return 0 }, func(h *Handler) { h.ScriptName = "/fn" })
	req := httptest.NewRequest(http.MethodGet, "/fn/path?q=1", nil)
	if panicked, err := ht.serve(httptest.NewRecorder(), req); err != nil || panicked != nil {
		t.Fatalf("ServeHTTP = %v, panic %v", err, panicked)
	}
	for _, want := range []string{"REQUEST_METHOD=GET", "PATH_INFO=/path", "QUERY_STRING=q=1", "SCRIPT_NAME=/fn", "ROUTE_VAR=route"} {
		if !slices.Contains(ht.src.proc.env, want) {
			t.Errorf("env lacks %s: %q", want, ht.src.proc.env)
		}
	}
}

// TestServeHTTPTimeout checks a program that outlives the timeout: 504
// before its header, an aborted response without exit trailer after it.
func TestServeHTTPTimeout(t *testing.T) {
	timeout := func(h *Handler) { h.Timeout = caddy.Duration(50 * time.Millisecond) }

	t.Run("before the header", func(t *testing.T) {
		ht := newHandlerTest(t, (*fakeProcess).waitKilled, timeout)
		panicked, err := ht.serve(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
		checkHandlerError(t, err, panicked, http.StatusGatewayTimeout, errTimeout)
		ht.checkEnded(t, true)
	})

	t.Run("after the header", func(t *testing.T) {
		ht := newHandlerTest(t, func(p *fakeProcess) uint32 {
			p.write("Content-Type: text/plain\n\npartial")
			return p.waitKilled()
		}, timeout)
		rec := httptest.NewRecorder()
		panicked, err := ht.serve(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		ht.checkCutShort(t, err, panicked, "response cut short", "timeout")
		checkResponse(t, rec.Result(), http.StatusOK, "partial", nil, map[string]string{trailerExitCode: ""})
		ht.checkEnded(t, true)
	})
}

// TestServeHTTPClientGone checks a client that goes away: 499 before the
// header, an aborted response after it.
func TestServeHTTPClientGone(t *testing.T) {
	t.Run("before the header", func(t *testing.T) {
		ht := newHandlerTest(t, (*fakeProcess).waitKilled, nil)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(30*time.Millisecond, cancel)
		req := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx)
		panicked, err := ht.serve(httptest.NewRecorder(), req)
		checkHandlerError(t, err, panicked, statusClientClosedRequest, errClientGone)
		ht.checkEnded(t, true)
	})

	t.Run("after the header", func(t *testing.T) {
		ht := newHandlerTest(t, func(p *fakeProcess) uint32 {
			p.write("\nfirst")
			return p.waitKilled()
		}, nil)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(30*time.Millisecond, cancel)
		req := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx)
		panicked, err := ht.serve(httptest.NewRecorder(), req)
		ht.checkCutShort(t, err, panicked, "response cut short", "client went away")
		ht.checkEnded(t, true)
	})

	t.Run("write fails", func(t *testing.T) {
		ht := newHandlerTest(t, func(p *fakeProcess) uint32 {
			p.write("\n")
			for p.write("more ") {
			}
			return 0
		}, nil)
		w := &failingWriter{ResponseRecorder: httptest.NewRecorder()}
		panicked, err := ht.serve(w, httptest.NewRequest(http.MethodGet, "/", nil))
		ht.checkCutShort(t, err, panicked, "client went away during response", "")
		ht.checkEnded(t, true)
	})
}

// failingWriter fails every body write, as a connection the client closed.
type failingWriter struct{ *httptest.ResponseRecorder }

func (w *failingWriter) Write([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

// TestServeHTTPContentLengthOverLimit checks that a body announced too
// large is refused with 413 before any container is acquired, and that one
// within the limit gets a container.
func TestServeHTTPContentLengthOverLimit(t *testing.T) {
	for _, tc := range []struct {
		name       string
		limit      *int64
		length     int64
		wantStatus int // 0: passes the check and is served
	}{
		{name: "over the default", length: defaultMaxRequestBody + 1, wantStatus: http.StatusRequestEntityTooLarge},
		{name: "over a route's limit", limit: ptr(int64(1000)), length: 1001, wantStatus: http.StatusRequestEntityTooLarge},
		{name: "at the limit", limit: ptr(int64(1000)), length: 1000},
		{name: "unlimited", limit: ptr(int64(0)), length: 1 << 40},
		{name: "unknown length", limit: ptr(int64(1000)), length: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ht := newHandlerTest(t, func(p *fakeProcess) uint32 { p.write("\nok"); return 0 },
				func(h *Handler) { h.MaxRequestBody = tc.limit })
			req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("x"))
			req.ContentLength = tc.length
			rec := httptest.NewRecorder()
			panicked, err := ht.serve(rec, req)
			if tc.wantStatus == 0 {
				if err != nil || panicked != nil {
					t.Fatalf("ServeHTTP = %v, panic %v; want it served", err, panicked)
				}
				if got := ht.src.acquired.Load(); got != 1 {
					t.Errorf("acquired %d containers, want 1", got)
				}
				checkResponse(t, rec.Result(), http.StatusOK, "ok", nil, nil)
				return
			}
			checkHandlerError(t, err, panicked, tc.wantStatus, errBodyTooLarge)
			if !strings.Contains(err.Error(), "over max_request_body") {
				t.Errorf("error %q does not name max_request_body", err)
			}
			if got := ht.src.acquired.Load(); got != 0 {
				t.Errorf("acquired %d containers for a refused body, want 0", got)
			}
			if rec.Header().Get("Connection") != "close" {
				t.Errorf("Connection %q, want close: the unread body must not be drained", rec.Header().Get("Connection"))
			}
		})
	}
}

// TestServeHTTPStreamedBodyOverLimit checks a body of unknown length that
// goes over max_request_body: 413 if the program has not answered yet, an
// aborted response if it has.
func TestServeHTTPStreamedBodyOverLimit(t *testing.T) {
	limit := func(h *Handler) { h.MaxRequestBody = ptr(int64(10)) }
	body := func() *http.Request {
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(strings.Repeat("x", 100)))
		req.ContentLength = -1
		return req
	}

	t.Run("before the header", func(t *testing.T) {
		// Like sort: reads all of stdin before it writes.
		ht := newHandlerTest(t, func(p *fakeProcess) uint32 {
			_, _ = io.Copy(io.Discard, p.stdinR)
			p.write("\ndone")
			return 0
		}, limit)
		rec := httptest.NewRecorder()
		panicked, err := ht.serve(rec, body())
		checkHandlerError(t, err, panicked, http.StatusRequestEntityTooLarge, errBodyTooLarge)
		if rec.Header().Get("Connection") != "close" {
			t.Errorf("Connection %q, want close", rec.Header().Get("Connection"))
		}
		ht.checkEnded(t, true)
	})

	t.Run("after the header", func(t *testing.T) {
		// Like cat: answers at once, then echoes.
		ht := newHandlerTest(t, func(p *fakeProcess) uint32 {
			p.write("\n")
			_, _ = io.Copy(p.stdoutW, p.stdinR)
			return p.waitKilled()
		}, limit)
		rec := httptest.NewRecorder()
		panicked, err := ht.serve(rec, body())
		ht.checkCutShort(t, err, panicked, "response cut short", "request body over max_request_body")
		if rec.Body.Len() > 10 {
			t.Errorf("echoed %d bytes, more than the 10 the program may read", rec.Body.Len())
		}
		ht.checkEnded(t, true)
	})
}

// TestServeHTTPResponseOverLimit checks a program that writes past
// max_response_bytes: the client gets exactly the limit, then an abort.
func TestServeHTTPResponseOverLimit(t *testing.T) {
	ht := newHandlerTest(t, func(p *fakeProcess) uint32 {
		p.write("\n")
		for p.write("0123456789") {
		}
		return 0
	}, func(h *Handler) { h.MaxResponseBytes = 25 })
	rec := httptest.NewRecorder()
	panicked, err := ht.serve(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	ht.checkCutShort(t, err, panicked, "response cut short", "response over max_response_bytes")
	if rec.Body.Len() != 25 {
		t.Errorf("sent %d bytes, want exactly max_response_bytes (25)", rec.Body.Len())
	}
	ht.checkEnded(t, true)
}

// TestServeHTTPNoContainer checks the statuses of requests that get no
// container: image not ready, containerd away, start failures, a full
// route.
func TestServeHTTPNoContainer(t *testing.T) {
	for _, tc := range []struct {
		name           string
		acquireErr     error
		beginErr       error
		full           bool // max_concurrent 1, taken
		wantStatus     int
		wantErr        error
		wantRetryAfter string
	}{
		{name: "image not ready", acquireErr: errImageNotReady, wantStatus: http.StatusServiceUnavailable, wantErr: errImageNotReady, wantRetryAfter: "5"},
		{name: "containerd unavailable", acquireErr: fmt.Errorf("creating: %w", spawner.ErrUnavailable), wantStatus: http.StatusServiceUnavailable, wantErr: errStartFailed, wantRetryAfter: "5"},
		{name: "spawner closed", acquireErr: spawner.ErrClosed, wantStatus: http.StatusBadGateway, wantErr: errStartFailed, wantRetryAfter: "5"},
		{name: "start failed", acquireErr: errors.New("runc: exec failed"), wantStatus: http.StatusBadGateway, wantErr: errStartFailed},
		{name: "request frame not delivered", beginErr: errors.New("broken pipe"), wantStatus: http.StatusBadGateway, wantErr: errStartFailed},
		{name: "max_concurrent reached", full: true, wantStatus: http.StatusServiceUnavailable, wantErr: errOverloaded, wantRetryAfter: "1"},
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
			rec := httptest.NewRecorder()
			panicked, err := ht.serve(rec, httptest.NewRequest(http.MethodGet, "/", nil))
			checkHandlerError(t, err, panicked, tc.wantStatus, tc.wantErr)
			if got := rec.Header().Get("Retry-After"); got != tc.wantRetryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.wantRetryAfter)
			}
			if got := ht.src.released.Load(); got != ht.src.acquired.Load() && tc.acquireErr == nil {
				t.Errorf("%d containers acquired, %d released", ht.src.acquired.Load(), got)
			}
		})
	}
}

// TestServeHTTPUsage checks the usage report of a request: trailers with
// report_usage only, placeholders and access-log fields always, and
// nothing made up when the cgroup could not be read.
func TestServeHTTPUsage(t *testing.T) {
	usage := &spawner.Usage{CPU: 212500 * time.Microsecond, MemoryPeak: 52 << 20}
	for _, tc := range []struct {
		name        string
		report      bool
		usage       *spawner.Usage
		wantTrailer map[string]string
		wantCPU     any // the {http.spawn.cpu_ms} placeholder
	}{
		{
			name: "report_usage", report: true, usage: usage,
			wantTrailer: map[string]string{trailerCPUMs: "212.5", trailerMemoryPeak: "54525952", trailerExitCode: "0"},
			wantCPU:     212.5,
		},
		{
			name: "not reported", usage: usage,
			wantTrailer: map[string]string{trailerCPUMs: "", trailerMemoryPeak: ""},
			wantCPU:     212.5,
		},
		{
			name: "unknown", report: true,
			wantTrailer: map[string]string{trailerCPUMs: "", trailerMemoryPeak: "", trailerExitCode: "0"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ht := newHandlerTest(t, func(p *fakeProcess) uint32 { p.write("\nok"); return 0 },
				func(h *Handler) { h.ReportUsage = tc.report })
			ht.src.proc.usage = tc.usage
			repl := caddy.NewReplacer()
			extra := new(caddyhttp.ExtraLogFields)
			ctx := context.WithValue(context.WithValue(context.Background(), caddy.ReplacerCtxKey, repl), caddyhttp.ExtraLogFieldsCtxKey, extra)
			rec := httptest.NewRecorder()
			if panicked, err := ht.serve(rec, httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx)); err != nil || panicked != nil {
				t.Fatalf("ServeHTTP = %v, panic %v", err, panicked)
			}
			resp := rec.Result()
			checkResponse(t, resp, http.StatusOK, "ok", nil, tc.wantTrailer)
			declared := strings.Join(resp.Header.Values("Trailer"), ",")
			if got := strings.Contains(declared, trailerCPUMs); got != tc.report {
				t.Errorf("Trailer %q declares %s: %t, want %t", declared, trailerCPUMs, got, tc.report)
			}
			got, _ := repl.Get("http.spawn.cpu_ms")
			if got != tc.wantCPU {
				t.Errorf("{http.spawn.cpu_ms} = %v, want %v", got, tc.wantCPU)
			}
			if mem, _ := repl.Get("http.spawn.memory_peak_bytes"); tc.usage != nil && mem != int64(52<<20) {
				t.Errorf("{http.spawn.memory_peak_bytes} = %v, want %d", mem, 52<<20)
			}
		})
	}
}
