package jobs

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"net/http"
	"strconv"
	"time"
)

// State is where a job is in its life.
type State string

// The states of a job. Queued, Running and Retrying are pending; Succeeded
// and Failed are final, and the job's result is kept until it expires.
const (
	// Queued: accepted and stored, waiting for a worker.
	Queued State = "queued"
	// Running: an attempt runs now (or ran when the process died, in
	// which case it runs again).
	Running State = "running"
	// Retrying: an attempt failed; the next one waits for its back-off.
	Retrying State = "retrying"
	// Succeeded: an attempt ended well; Result is its response.
	Succeeded State = "succeeded"
	// Failed: the last allowed attempt failed; Result says how.
	Failed State = "failed"
)

// Final reports whether s is an end state.
func (s State) Final() bool { return s == Succeeded || s == Failed }

// Job is one accepted invocation: the request as the function will see it
// (its body is stored beside the record) and what became of it.
type Job struct {
	// ID is 128 random bits in hex: unguessable, and a file name.
	ID string `json:"id"`
	// Created is when the job was accepted.
	Created time.Time `json:"created"`
	// Method and URI are the request's, for logs and the status document.
	Method string `json:"method"`
	URI    string `json:"uri"`
	// Env is the request's environment as the function sees it (the CGI
	// meta-variables), without the route's own env, which is added at each
	// run from the config in force then, so no secret of the config is
	// written to disk.
	Env []string `json:"env"`
	// BodySize is the length of the stored body, checked when loading.
	BodySize int64 `json:"body_size"`

	State State `json:"state"`
	// Attempts counts the attempts started, the one running included.
	Attempts int `json:"attempts"`
	// NextRun is when a retrying job may run again.
	NextRun time.Time `json:"next_run,omitzero"`
	// Finished is when the job reached a final state.
	Finished time.Time `json:"finished,omitzero"`
	// Result is the outcome of the last attempt that ended.
	Result *Result `json:"result,omitempty"`
}

// Result is how one attempt ended.
type Result struct {
	// Status and Header are the response as the program set them (CGI
	// header block), or, when the attempt ended before a header, the
	// status the synchronous request would have got and no header.
	Status int         `json:"status"`
	Header http.Header `json:"header,omitempty"`
	// BodySize is the length of the stored response body; Truncated is
	// set when the program wrote more than the queue's max result bytes.
	BodySize  int64 `json:"body_size"`
	Truncated bool  `json:"truncated,omitempty"`
	// Exited says the program ran to an exit, with ExitCode; OOMKilled
	// says the memory limit killed it.
	Exited    bool   `json:"exited"`
	ExitCode  uint32 `json:"exit_code"`
	OOMKilled bool   `json:"oom_killed,omitempty"`
	// Error says why the attempt failed; empty when it did not.
	Error string `json:"error,omitempty"`
	// StderrTail is the end of the program's stderr.
	StderrTail string `json:"stderr_tail,omitempty"`
}

// NewID returns a fresh job ID: 128 random bits, hex.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// ValidID reports whether id has the shape NewID gives: it guards file
// names against anything a client sends.
func ValidID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// clone is a copy of j that shares nothing mutable with it.
func (j *Job) clone() *Job {
	c := *j
	c.Env = append([]string(nil), j.Env...)
	if j.Result != nil {
		r := *j.Result
		r.Header = j.Result.Header.Clone()
		c.Result = &r
	}
	return &c
}

// recordMagic starts every job record; the version changes with the
// format.
const recordMagic = "caddy-spawn-job 1"

var errCorrupt = errors.New("corrupt job record")

// encodeRecord is j as stored: a first line with the magic, the length and
// the CRC-32C of the JSON, then the JSON. The checksum catches what a torn
// or truncated write leaves, including JSON that happens to parse.
func encodeRecord(j *Job) ([]byte, error) {
	js, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("encoding job %s: %w", j.ID, err)
	}
	sum := crc32.Checksum(js, castagnoli)
	out := fmt.Appendf(nil, "%s %d %08x\n", recordMagic, len(js), sum)
	return append(out, js...), nil
}

// decodeRecord parses a stored record, refusing any that is damaged.
func decodeRecord(b []byte) (*Job, error) {
	line, js, ok := bytes.Cut(b, []byte{'\n'})
	if !ok {
		return nil, fmt.Errorf("%w: no header line", errCorrupt)
	}
	fields := bytes.Fields(line)
	if len(fields) != 4 || string(fields[0])+" "+string(fields[1]) != recordMagic {
		return nil, fmt.Errorf("%w: bad header line", errCorrupt)
	}
	n, err := strconv.Atoi(string(fields[2]))
	if err != nil || n != len(js) {
		return nil, fmt.Errorf("%w: %d bytes of JSON, header says %s", errCorrupt, len(js), fields[2])
	}
	want, err := strconv.ParseUint(string(fields[3]), 16, 32)
	if err != nil || uint32(want) != crc32.Checksum(js, castagnoli) {
		return nil, fmt.Errorf("%w: checksum mismatch", errCorrupt)
	}
	var j Job
	if err := json.Unmarshal(js, &j); err != nil {
		return nil, fmt.Errorf("%w: %w", errCorrupt, err)
	}
	if !ValidID(j.ID) {
		return nil, fmt.Errorf("%w: bad id %q", errCorrupt, j.ID)
	}
	return &j, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)
