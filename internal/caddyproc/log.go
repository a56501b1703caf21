package caddyproc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
)

// Log collects Caddy's output (JSON log lines, plus plain text such as a
// start-up error) in memory and in a file, and finds entries in it.
type Log struct {
	path string
	mu   sync.Mutex
	buf  bytes.Buffer
	file *os.File
}

// NewLog creates the log file at path.
func NewLog(path string) (*Log, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("creating the Caddy log: %w", err)
	}
	return &Log{path: path, file: f}, nil
}

// Path is the file the log is kept in.
func (l *Log) Path() string { return l.path }

// Write keeps p in memory and in the file; it never fails, so Caddy's output
// is never cut short by a full disk.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if l.file != nil {
		_, _ = l.file.Write(p)
	}
	return len(p), nil
}

// Close closes the file; the log stays readable from memory.
func (l *Log) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		_ = l.file.Close()
		l.file = nil
	}
}

// String returns everything Caddy wrote so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Tail returns at most the last n bytes of the log, marked with "…" when
// cut.
func (l *Log) Tail(n int) string {
	s := l.String()
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// Contains reports whether the output so far contains s.
func (l *Log) Contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Contains(l.buf.Bytes(), []byte(s))
}

// Entries parses every complete JSON log line.
func (l *Log) Entries() []map[string]any {
	var out []map[string]any
	for line := range strings.SplitSeq(l.String(), "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// FindAll returns the log entries whose msg is msg and whose fields match
// fields: a field matches when its value, formatted with fmt.Sprint,
// contains the wanted string (so numbers compare as "3").
func (l *Log) FindAll(msg string, fields map[string]string) []map[string]any {
	var out []map[string]any
	for _, e := range l.Entries() {
		if e["msg"] == msg && matches(e, fields) {
			out = append(out, e)
		}
	}
	return out
}

// Find returns the first entry FindAll would return.
func (l *Log) Find(msg string, fields map[string]string) (map[string]any, bool) {
	all := l.FindAll(msg, fields)
	if len(all) == 0 {
		return nil, false
	}
	return all[0], true
}

// ErrorMentioning returns the first error-level entry whose msg contains
// every one of parts.
func (l *Log) ErrorMentioning(parts ...string) (map[string]any, bool) {
	for _, e := range l.Entries() {
		if e["level"] != "error" {
			continue
		}
		msg := fmt.Sprint(e["msg"])
		ok := true
		for _, s := range parts {
			if !strings.Contains(msg, s) {
				ok = false
				break
			}
		}
		if ok {
			return e, true
		}
	}
	return nil, false
}

func matches(e map[string]any, fields map[string]string) bool {
	for k, want := range fields {
		v, present := e[k]
		if !present || !strings.Contains(fmt.Sprint(v), want) {
			return false
		}
	}
	return true
}
