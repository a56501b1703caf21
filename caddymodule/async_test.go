package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-spawn/caddy-spawn/jobs"
)

// readyRoute is a route whose image is ready, for handlers on a fake source.
func readyRoute() *route {
	r := &route{ready: make(chan struct{})}
	close(r.ready)
	return r
}

// TestRunJob: an attempt runs through Handler.run with the stored
// environment plus SPAWN_ATTEMPT and SPAWN_JOB_ID, and its outcome tells a
// success from each kind of failure.
func TestRunJob(t *testing.T) {
	tests := []struct {
		name       string
		program    func(p *fakeProcess) uint32
		wantFailed bool
		wantStatus int
		wantBody   string
		wantCode   uint32
		wantStderr string
		wantKilled bool // a failure before the header kills the container
	}{
		{
			name: "success",
			program: func(p *fakeProcess) uint32 {
				in, _ := io.ReadAll(p.stdinR)
				p.write("Status: 201 Created\nX-A: b\n\n" + strings.ToUpper(string(in)))
				return 0
			},
			wantStatus: 201, wantBody: "HELLO",
		},
		{
			name: "exit without output",
			program: func(p *fakeProcess) uint32 {
				_, _ = io.WriteString(p.stderrW, "boom\n")
				return 1
			},
			wantFailed: true, wantStatus: http.StatusBadGateway, wantCode: 1, wantStderr: "boom\n", wantKilled: true,
		},
		{
			name: "output then non-zero exit",
			program: func(p *fakeProcess) uint32 {
				p.write("Content-Type: text/plain\n\npartial")
				return 3
			},
			wantFailed: true, wantStatus: 200, wantBody: "partial", wantCode: 3,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ht := newHandlerTest(t, tc.program, nil)
			ht.h.route = readyRoute()
			job := &jobs.Job{ID: jobs.NewID(), Method: "POST", URI: "/fn/x?q=1", Env: []string{"REQUEST_METHOD=POST", "STORED=yes"}, BodySize: 5}
			var out bytes.Buffer
			oc := ht.h.runJob(context.Background(), jobs.Attempt{Job: job, Number: 2, Body: strings.NewReader("hello"), Output: &out})
			if oc.Failed != tc.wantFailed || oc.Result.Status != tc.wantStatus || out.String() != tc.wantBody {
				t.Errorf("outcome failed=%t status=%d body %q, want %t %d %q (error %q)",
					oc.Failed, oc.Result.Status, out.String(), tc.wantFailed, tc.wantStatus, tc.wantBody, oc.Result.Error)
			}
			if !oc.Result.Exited || oc.Result.ExitCode != tc.wantCode {
				t.Errorf("exit: exited %t code %d, want code %d", oc.Result.Exited, oc.Result.ExitCode, tc.wantCode)
			}
			if tc.wantFailed && oc.Result.Error == "" {
				t.Error("a failed attempt has no error")
			}
			if oc.Result.StderrTail != tc.wantStderr {
				t.Errorf("stderr tail %q, want %q", oc.Result.StderrTail, tc.wantStderr)
			}
			env := ht.src.proc.env
			for _, want := range []string{"STORED=yes", "ROUTE_VAR=route", "SPAWN_ATTEMPT=2", "SPAWN_JOB_ID=" + job.ID} {
				if !slices.Contains(env, want) {
					t.Errorf("env %v lacks %s", env, want)
				}
			}
			if _, ok := oc.Result.Header["Trailer"]; ok {
				t.Error("stored header keeps the Trailer declaration")
			}
			ht.checkEnded(t, tc.wantKilled)
		})
	}
}

// asyncHandlerTest is a handler with async on over a real queue in a temp
// dir, whose workers are not started: jobs stay queued.
func asyncHandlerTest(t *testing.T, mode string, maxQueued int) (*handlerTest, string) {
	t.Helper()
	ht := newHandlerTest(t, func(p *fakeProcess) uint32 { p.write("\nsync"); return 0 }, func(h *Handler) {
		h.Async = &AsyncConfig{Mode: mode, MaxQueued: maxQueued}
		n := int64(10)
		h.MaxRequestBody = &n
	})
	ht.h.Async.setDefaults(0)
	dir := filepath.Join(t.TempDir(), "jobs")
	q := jobs.NewQueue(jobs.Config{Store: jobs.NewStore(dir), Limits: ht.h.Async.limits()})
	t.Cleanup(q.Close)
	ht.h.async = &asyncQueue{q: q, name: "fn"}
	return ht, dir
}

func serveAsyncReq(t *testing.T, ht *handlerTest, method, target, body string, hdr map[string]string) (*httptest.ResponseRecorder, error) {
	t.Helper()
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	panicked, err := ht.serve(w, r)
	if panicked != nil {
		t.Fatalf("ServeHTTP panicked: %v", panicked)
	}
	return w, err
}

// TestAsyncAcceptStatusDelete: allow accepts only with the preference, and
// answers 202 with Location and Preference-Applied once the job is stored;
// its status URL says queued; DELETE removes it; max_queued and
// max_request_body refuse without storing anything.
func TestAsyncAcceptStatusDelete(t *testing.T) {
	ht, dir := asyncHandlerTest(t, asyncAllow, 2)
	prefer := map[string]string{"Prefer": "respond-async"}

	w, err := serveAsyncReq(t, ht, "POST", "/fn/x", "hi", nil)
	if err != nil || w.Body.String() != "sync" {
		t.Fatalf("without Prefer: %v %q, want the synchronous answer", err, w.Body.String())
	}
	w, err = serveAsyncReq(t, ht, "POST", "/fn/x?a=1", "hi", prefer)
	if err != nil || w.Code != http.StatusAccepted {
		t.Fatalf("accept: %v %d", err, w.Code)
	}
	loc := w.Header().Get("Location")
	if !strings.HasPrefix(loc, "/fn/x?spawn-job=") || w.Header().Get("Preference-Applied") != "respond-async" {
		t.Fatalf("Location %q, Preference-Applied %q", loc, w.Header().Get("Preference-Applied"))
	}
	id := strings.TrimPrefix(loc, "/fn/x?spawn-job=")
	if b, err := os.ReadFile(filepath.Join(dir, id+".body")); err != nil || string(b) != "hi" {
		t.Errorf("stored body %q, %v", b, err)
	}
	j, ok := ht.h.async.q.Get(id)
	if !ok || !slices.Contains(j.Env, "QUERY_STRING=a=1") || j.URI != "/fn/x?a=1" {
		t.Errorf("stored job %+v", j)
	}
	for _, kv := range j.Env {
		if strings.HasPrefix(kv, "ROUTE_VAR=") {
			t.Error("the route's env was stored with the job")
		}
	}

	w, err = serveAsyncReq(t, ht, "GET", loc, "", nil)
	var doc map[string]any
	if err != nil || w.Code != http.StatusAccepted || json.Unmarshal(w.Body.Bytes(), &doc) != nil || doc["state"] != "queued" {
		t.Fatalf("status: %v %d %q", err, w.Code, w.Body.String())
	}

	// One more fits (max_queued 2), then 503; an oversized body gets 413.
	if w, err := serveAsyncReq(t, ht, "POST", "/fn/y", "", prefer); err != nil || w.Code != http.StatusAccepted {
		t.Fatalf("second accept: %v %d", err, w.Code)
	}
	w, err = serveAsyncReq(t, ht, "POST", "/fn/z", "", prefer)
	checkHandlerError(t, err, nil, http.StatusServiceUnavailable, errQueueFull)
	if w.Header().Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if _, err := serveAsyncReq(t, ht, "DELETE", loc, "", nil); err != nil {
		t.Fatalf("DELETE: %v", err)
	}
	_, err = serveAsyncReq(t, ht, "POST", "/fn/z", "0123456789abc", prefer)
	checkHandlerError(t, err, nil, http.StatusRequestEntityTooLarge, errBodyTooLarge)
	_, err = serveAsyncReq(t, ht, "GET", loc, "", nil)
	checkHandlerError(t, err, nil, http.StatusNotFound, errJobNotFound)
	_, err = serveAsyncReq(t, ht, "GET", "/fn/x?spawn-job=../../etc/passwd", "", nil)
	checkHandlerError(t, err, nil, http.StatusNotFound, errJobNotFound)
	entries, _ := filepath.Glob(filepath.Join(dir, "*.job"))
	if len(entries) != 1 {
		t.Errorf("%d job records stored, want 1 (one deleted, two refused)", len(entries))
	}
}

func TestPrefersAsync(t *testing.T) {
	tests := []struct {
		prefer []string
		want   bool
	}{
		{nil, false},
		{[]string{"respond-async"}, true},
		{[]string{"wait=10, Respond-Async"}, true},
		{[]string{"return=minimal", "respond-async; x=y"}, true},
		{[]string{"respond-asynchronously"}, false},
		{[]string{"return=respond-async"}, false},
	}
	for _, tc := range tests {
		h := http.Header{"Prefer": tc.prefer}
		if got := prefersAsync(h); got != tc.want {
			t.Errorf("prefersAsync(%q) = %t, want %t", tc.prefer, got, tc.want)
		}
	}
}

func TestUnmarshalAsync(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    AsyncConfig
		wantErr string
	}{
		{name: "mode only", input: "async always", want: AsyncConfig{Mode: "always"}},
		{
			name: "block", input: "async allow {\n max_retries 0\n retry_backoff 5s\n max_queued 7\n max_result_bytes 1KiB\n result_ttl 1h\n workers 4\n}",
			want: AsyncConfig{Mode: "allow", MaxRetries: new(int), RetryBackoff: 5e9, MaxQueued: 7, MaxResultBytes: 1024, ResultTTL: 36e11, Workers: 4},
		},
		{name: "bad mode", input: "async maybe", wantErr: `async: mode "maybe"`},
		{name: "no mode", input: "async", wantErr: "wrong argument count"},
		{name: "bad retries", input: "async allow {\n max_retries 101\n}", wantErr: "async max_retries: 101"},
		{name: "bad workers", input: "async allow {\n workers 0\n}", wantErr: "async workers: 0"},
		{name: "duplicate", input: "async allow {\n workers 1\n workers 2\n}", wantErr: `duplicate subdirective "workers"`},
		{name: "unknown", input: "async allow {\n retries 1\n}", wantErr: `unknown subdirective "retries"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := caddyfile.NewTestDispenser("spawn localhost/fn:1 {\n" + tc.input + "\n}")
			var h Handler
			err := h.UnmarshalCaddyfile(d)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := fmt.Sprintf("%+v", derefAsync(h.Async)), fmt.Sprintf("%+v", derefAsync(&tc.want)); got != want {
				t.Errorf("got %s, want %s", got, want)
			}
		})
	}
}

// derefAsync is c with MaxRetries shown by value.
func derefAsync(c *AsyncConfig) string {
	r := "nil"
	if c.MaxRetries != nil {
		r = fmt.Sprint(*c.MaxRetries)
	}
	cc := *c
	cc.MaxRetries = nil
	return fmt.Sprintf("%+v retries=%s", cc, r)
}

func TestCheckAsync(t *testing.T) {
	neg := -1
	for _, tc := range []struct {
		c       AsyncConfig
		wantErr string
	}{
		{AsyncConfig{Mode: "allow"}, ""},
		{AsyncConfig{Mode: "later"}, "async: mode"},
		{AsyncConfig{MaxRetries: &neg}, "async max_retries"},
		{AsyncConfig{MaxQueued: -3}, "async max_queued"},
		{AsyncConfig{MaxResultBytes: -1}, "async max_result_bytes"},
		{AsyncConfig{ResultTTL: -1}, "async result_ttl"},
		{AsyncConfig{Workers: 1000}, "async workers"},
	} {
		h := Handler{Async: &tc.c}
		err := h.checkAsync()
		if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("checkAsync(%+v) = %v, want %q", tc.c, err, tc.wantErr)
		}
	}
}
