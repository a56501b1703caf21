//go:build integration

package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// asyncTimeout bounds how long a test waits for accepted jobs to finish.
const asyncTimeout = 3 * time.Minute

// jobStatus is what a status URL answered.
type jobStatus struct {
	code   int
	header http.Header
	body   []byte
	doc    map[string]any // the JSON document of a pending or failed job
}

func (s jobStatus) state() string { return s.header.Get("Spawn-Job-State") }

// acceptAsync sends a request asking for an asynchronous answer and
// returns its status URL, checking the 202.
func (p *caddyProc) acceptAsync(t *testing.T, method, path string, body []byte, prefer bool) string {
	t.Helper()
	resp, rbody := p.sendAsync(t, method, path, body, prefer)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("%s %s: %d %q, want 202", method, path, resp.StatusCode, rbody)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, path+"?spawn-job=") {
		t.Fatalf("Location %q, want a status URL on %s", loc, path)
	}
	if prefer && resp.Header.Get("Preference-Applied") != "respond-async" {
		t.Errorf("Preference-Applied %q, want respond-async", resp.Header.Get("Preference-Applied"))
	}
	return loc
}

func (p *caddyProc) sendAsync(t *testing.T, method, path string, body []byte, prefer bool) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, p.url(path), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if prefer {
		req.Header.Set("Prefer", "respond-async, wait=1")
	}
	return p.do(t, req)
}

// jobStatus GETs a status URL.
func (p *caddyProc) jobStatus(t *testing.T, loc string) jobStatus {
	t.Helper()
	resp, body := p.get(t, loc)
	s := jobStatus{code: resp.StatusCode, header: resp.Header, body: body}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") && s.state() != "succeeded" {
		if err := json.Unmarshal(body, &s.doc); err != nil {
			t.Fatalf("GET %s: bad JSON %q: %v", loc, body, err)
		}
	}
	return s
}

// waitJob polls a status URL until the job is final.
func (p *caddyProc) waitJob(t *testing.T, loc string) jobStatus {
	t.Helper()
	var last jobStatus
	eventually(t, asyncTimeout, func() (bool, string) {
		last = p.jobStatus(t, loc)
		st := last.state()
		return st == "succeeded" || st == "failed", fmt.Sprintf("job %s still %d %s: %s", loc, last.code, st, last.body)
	})
	return last
}

// asyncRoute is a testfn route with async set to mode and the given async
// block lines.
func asyncRoute(path, name, args, mode string, asyncLines []string, extra ...string) string {
	block := "async " + mode
	if len(asyncLines) > 0 {
		block += " {\n\t\t\t\t" + strings.Join(asyncLines, "\n\t\t\t\t") + "\n\t\t\t}"
	}
	return testfnRoute(path+"*", name, args, append([]string{block}, extra...)...)
}

// TestAsyncAccept: with async allow, "Prefer: respond-async" gets 202 with a
// status URL on the route; polling it returns the program's output, here
// the SHA-256 of a 20 MiB body. Without the preference the route answers
// synchronously; a job's URL answers only on its own route.
func TestAsyncAccept(t *testing.T) {
	port := freePort(t)
	p := startCaddy(t, port, site(port,
		asyncRoute("/sum", "sum", "sha256", "allow", nil, "max_request_body 64MiB"),
		asyncRoute("/other", "other", "sha256", "allow", nil),
	))
	body := make([]byte, 20<<20)
	if _, err := rand.Read(body); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	want := hex.EncodeToString(sum[:]) + "\n"

	resp, sync := p.sendAsync(t, http.MethodPost, "/sum", []byte("abc"), false)
	abc := sha256.Sum256([]byte("abc"))
	if resp.StatusCode != http.StatusOK || string(sync) != hex.EncodeToString(abc[:])+"\n" {
		t.Fatalf("without Prefer: %d %q, want 200 and the sum (synchronous)", resp.StatusCode, sync)
	}

	loc := p.acceptAsync(t, http.MethodPost, "/sum", body, true)
	id := strings.TrimPrefix(loc, "/sum?spawn-job=")
	if len(id) != 32 {
		t.Errorf("job id %q: want 128 bits in hex", id)
	}
	final := p.waitJob(t, loc)
	if final.code != http.StatusOK || string(final.body) != want {
		t.Fatalf("result: %d %q, want 200 %q", final.code, final.body, want)
	}
	if got := final.header.Get("Content-Type"); got != "text/plain" {
		t.Errorf("result Content-Type %q, want the program's text/plain", got)
	}
	if a, c := final.header.Get("Spawn-Attempts"), final.header.Get("Spawn-Exit-Code"); a != "1" || c != "0" {
		t.Errorf("Spawn-Attempts %q, Spawn-Exit-Code %q; want 1 and 0", a, c)
	}
	// The result stays; another route doesn't know the job; a made-up ID
	// is unknown.
	if again := p.jobStatus(t, loc); again.code != http.StatusOK || string(again.body) != want {
		t.Errorf("second GET: %d %q", again.code, again.body)
	}
	if other := p.jobStatus(t, "/other?spawn-job="+id); other.code != http.StatusNotFound {
		t.Errorf("job on another route: %d, want 404", other.code)
	}
	if none := p.jobStatus(t, "/sum?spawn-job="+strings.Repeat("0", 32)); none.code != http.StatusNotFound {
		t.Errorf("unknown job: %d, want 404", none.code)
	}
	p.Stop()
}

// TestAsyncRetries: a program that fails until its third attempt (it reads
// SPAWN_ATTEMPT) ends succeeded with 3 attempts; one that always fails ends
// failed after 1 + max_retries attempts, with its exit code and stderr tail.
func TestAsyncRetries(t *testing.T) {
	port := freePort(t)
	backoff := []string{"retry_backoff 100ms"}
	p := startCaddy(t, port, site(port,
		asyncRoute("/flaky", "flaky", "fail-until 3", "always", backoff),
		asyncRoute("/broken", "broken", "exit 3", "always", append(backoff, "max_retries 2")),
	))
	flaky := p.acceptAsync(t, http.MethodPost, "/flaky", nil, false)
	broken := p.acceptAsync(t, http.MethodPost, "/broken", []byte("x"), false)

	s := p.waitJob(t, flaky)
	if s.state() != "succeeded" || s.header.Get("Spawn-Attempts") != "3" || string(s.body) != "ok at attempt 3\n" {
		t.Errorf("flaky: %s, attempts %s, %d %q; want succeeded after 3 with the third attempt's output",
			s.state(), s.header.Get("Spawn-Attempts"), s.code, s.body)
	}
	s = p.waitJob(t, broken)
	if s.state() != "failed" || s.code != http.StatusBadGateway {
		t.Fatalf("broken: %s %d %q, want failed 502", s.state(), s.code, s.body)
	}
	if s.doc["attempts"] != float64(3) || s.doc["exit_code"] != float64(3) {
		t.Errorf("broken: attempts %v, exit_code %v; want 3 and 3", s.doc["attempts"], s.doc["exit_code"])
	}
	if tail, _ := s.doc["stderr_tail"].(string); !strings.Contains(tail, "boom on stderr") {
		t.Errorf("broken: stderr_tail %q, want the program's stderr", tail)
	}
	p.Stop()
}

// TestAsyncCrashRestart: 200 accepted jobs, Caddy SIGKILLed while some run
// and most are queued, then started again on the same data directory: all
// 200 end with a stored result, each its own job's (the program prints
// SPAWN_JOB_ID), none lost; only jobs that were not finished at the kill
// ran more than once, and no more of them than ran at once.
func TestAsyncCrashRestart(t *testing.T) {
	const jobs, workers = 200, 2
	port := freePort(t)
	dir := t.TempDir()
	config := caddyfile(site(port, asyncRoute("/work", "work", "job 100ms", "always", []string{"workers " + strconv.Itoa(workers)})))
	first := launchCaddyIn(t, port, config, dir)
	t.Cleanup(first.Stop)
	if err := first.waitServing(startTimeout); err != nil {
		first.dumpLogs()
		t.Fatal(err)
	}
	locs := make([]string, jobs)
	for i := range locs {
		locs[i] = first.acceptAsync(t, http.MethodPost, "/work", []byte(strconv.Itoa(i)), false)
	}
	// Kill once a few have finished: some run now, most wait.
	doneBefore := map[string]string{}
	eventually(t, asyncTimeout, func() (bool, string) {
		n := 0
		for _, loc := range locs[:20] {
			if first.jobStatus(t, loc).state() == "succeeded" {
				n++
			}
		}
		return n >= 5, fmt.Sprintf("%d of the first 20 jobs done", n)
	})
	// What is done now was done before the kill (more may finish before
	// it lands: those are simply not in doneBefore).
	for _, loc := range locs {
		if s := first.jobStatus(t, loc); s.state() == "succeeded" {
			doneBefore[loc] = string(s.body)
		}
	}
	if err := syscall.Kill(first.proc.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.proc.Exited()
	first.ctrd = nil

	second := launchCaddyIn(t, port, config, dir)
	t.Cleanup(second.Stop)
	if err := second.waitServing(startTimeout); err != nil {
		second.dumpLogs()
		t.Fatal(err)
	}
	marker := regexp.MustCompile(`^job ([0-9a-f]{32}) attempt (\d+)\n$`)
	reran := 0
	for _, loc := range locs {
		s := second.waitJob(t, loc)
		m := marker.FindStringSubmatch(string(s.body))
		if s.state() != "succeeded" || m == nil {
			t.Errorf("job %s: %s %d %q", loc, s.state(), s.code, s.body)
			continue
		}
		if want := strings.TrimPrefix(loc, "/work?spawn-job="); m[1] != want {
			t.Errorf("job %s holds the result of job %s", want, m[1])
		}
		if before, ok := doneBefore[loc]; ok && before != string(s.body) {
			t.Errorf("job %s was done before the kill with %q, after it %q", loc, before, s.body)
		}
		if m[2] != "1" {
			reran++
		}
		if m[2] != s.header.Get("Spawn-Attempts") {
			t.Errorf("job %s: program saw attempt %s, status says %s", loc, m[2], s.header.Get("Spawn-Attempts"))
		}
	}
	t.Logf("%d jobs done before the kill, %d ran again after it", len(doneBefore), reran)
	if reran > workers {
		t.Errorf("%d jobs ran more than once; only the %d running at the kill may", reran, workers)
	}
	if len(doneBefore) >= jobs {
		t.Errorf("all jobs were done before the kill: the test killed nothing")
	}
	second.Stop()
}

// TestAsyncMaxQueuedAndDelete: past max_queued a request gets 503 with
// Retry-After and nothing is stored; a deleted queued job never runs and
// its files go; a deleted running job is killed.
func TestAsyncMaxQueuedAndDelete(t *testing.T) {
	port := freePort(t)
	dir := t.TempDir()
	config := caddyfile(site(port, asyncRoute("/q", "q", "job 5s", "always", []string{"max_queued 3", "workers 1"})))
	p := launchCaddyIn(t, port, config, dir)
	t.Cleanup(p.Stop)
	if err := p.waitServing(startTimeout); err != nil {
		p.dumpLogs()
		t.Fatal(err)
	}
	spool := filepath.Join(dir, "data", "caddy", "spawn", "async", namespace, "q")
	records := func() []string {
		m, _ := filepath.Glob(filepath.Join(spool, "*.job"))
		return m
	}
	var locs []string
	for range 3 {
		locs = append(locs, p.acceptAsync(t, http.MethodPost, "/q", []byte("x"), false))
	}
	resp, body := p.sendAsync(t, http.MethodPost, "/q", []byte("x"), false)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("fourth job: %d (Retry-After %q) %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if n := len(records()); n != 3 {
		t.Errorf("%d job records in %s, want 3: a refused job must not be stored", n, spool)
	}

	// Delete the last (queued: one worker, 5 s per job).
	last := locs[2]
	if s := p.jobStatus(t, last); s.state() != "queued" || s.code != http.StatusAccepted {
		t.Fatalf("last job: %d %s, want 202 queued", s.code, s.state())
	}
	req, _ := http.NewRequest(http.MethodDelete, p.url(last), nil)
	if resp, body := p.do(t, req); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %d %q, want 204", resp.StatusCode, body)
	}
	if s := p.jobStatus(t, last); s.code != http.StatusNotFound {
		t.Errorf("deleted job: %d, want 404", s.code)
	}
	id := strings.TrimPrefix(last, "/q?spawn-job=")
	if left, _ := filepath.Glob(filepath.Join(spool, id+"*")); len(left) != 0 {
		t.Errorf("files of the deleted job left: %v", left)
	}
	// Delete the first while it runs: it is killed, and the second runs.
	first := locs[0]
	eventually(t, asyncTimeout, func() (bool, string) {
		st := p.jobStatus(t, first).state()
		claims := routeClaims(scrapeMetrics(t), "q")
		return st == "running" && claims == 1, fmt.Sprintf("first job %s, %v containers claimed", st, claims)
	})
	req, _ = http.NewRequest(http.MethodDelete, p.url(first), nil)
	if resp, body := p.do(t, req); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE of the running job: %d %q, want 204", resp.StatusCode, body)
	}
	if s := p.jobStatus(t, first); s.code != http.StatusNotFound {
		t.Errorf("deleted running job: %d, want 404", s.code)
	}
	if s := p.waitJob(t, locs[1]); s.state() != "succeeded" {
		t.Errorf("second job: %s %q", s.state(), s.body)
	}
	// Nothing is pending: had the deleted queued job run, it would have
	// been claimed a container by now.
	eventually(t, 30*time.Second, func() (bool, string) {
		m := scrapeMetrics(t)
		pending := metricValue(m, `caddy_spawn_async_jobs{route="q",state="queued"}`) +
			metricValue(m, `caddy_spawn_async_jobs{route="q",state="running"}`)
		return pending == 0, fmt.Sprintf("%v jobs pending", pending)
	})
	m := scrapeMetrics(t)
	if claims := routeClaims(m, "q"); claims != 2 {
		t.Errorf("%v containers claimed on route q, want 2: the deleted job must not run", claims)
	}
	if got := metricValue(m, `caddy_spawn_async_failures_total{route="q"}`); got != 0 {
		t.Errorf("failures %v, want 0", got)
	}
	p.Stop()
}

var scrapeMu sync.Mutex

// scrapeMetrics reads Caddy's metrics from the admin endpoint: each sample
// line, name{labels} → value.
func scrapeMetrics(t *testing.T) map[string]float64 {
	t.Helper()
	scrapeMu.Lock()
	defer scrapeMu.Unlock()
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

func metricValue(m map[string]float64, key string) float64 { return m[key] }

// routeClaims is how many containers route has claimed, warm or cold.
func routeClaims(m map[string]float64, route string) float64 {
	return m[`caddy_spawn_claims_total{result="hit",route="`+route+`"}`] +
		m[`caddy_spawn_claims_total{result="miss",route="`+route+`"}`]
}
