// Package initframe encodes and decodes the request frame that caddy-spawn
// writes to a container's stdin before the request body.
//
// Pooled containers are started before their request exists, so per-request
// CGI variables cannot be part of the OCI spec. Instead the container's first
// process is spawn-init (cmd/spawn-init), which reads exactly one frame from
// stdin, merges the environment it carries over its own, and execs the real
// program with the rest of stdin (the request body) left unread.
//
// # Frame format
//
//	offset  size  field
//	0       4     magic "SPWN"
//	4       1     version, currently 1
//	5       4     payload length L, big-endian uint32, L <= MaxPayload (1 MiB)
//	9       L     payload
//
// The payload is zero or more entries, each "KEY=VALUE" followed by a single
// NUL byte, so it is either empty or ends in NUL. KEY is non-empty and
// contains neither NUL nor '='; VALUE contains no NUL and may be empty or
// contain '='. For a given entry list the encoding is unique: Decode followed
// by Encode reproduces the frame byte for byte.
//
// This package is imported by spawn-init and must stay small: standard
// library only, and no fmt, reflect or encoding/binary.
package initframe

import (
	"errors"
	"io"
	"strconv"
	"strings"
)

const (
	// Magic opens every frame.
	Magic = "SPWN"
	// Version is the only frame version this package reads and writes.
	Version = 1
	// MaxPayload is the largest accepted payload length, in bytes.
	MaxPayload = 1 << 20

	headerLen = len(Magic) + 1 + 4
)

// Errors returned by Decode and Encode, always wrapped with detail; test
// with errors.Is. A frame cut short returns an error wrapping
// io.ErrUnexpectedEOF (also when no byte of it arrived at all).
var (
	ErrBadMagic   = errors.New("initframe: bad magic")
	ErrBadVersion = errors.New("initframe: unsupported version")
	ErrTooLarge   = errors.New("initframe: payload too large")
	ErrMalformed  = errors.New("initframe: malformed payload")
)

// Encode returns the frame carrying env, whose entries must be "KEY=VALUE"
// with a non-empty KEY and no NUL byte anywhere.
func Encode(env []string) ([]byte, error) {
	size := 0
	for i, e := range env {
		if err := checkEntry(i, e); err != nil {
			return nil, err
		}
		size += len(e) + 1
		if size > MaxPayload {
			return nil, &detailError{err: ErrTooLarge, suffix: ": more than " + strconv.Itoa(MaxPayload) + " bytes"}
		}
	}
	b := make([]byte, 0, headerLen+size)
	b = append(b, Magic...)
	b = append(b, Version, byte(size>>24), byte(size>>16), byte(size>>8), byte(size))
	for _, e := range env {
		b = append(b, e...)
		b = append(b, 0)
	}
	return b, nil
}

// Decode reads one frame from r and returns its entries (nil if there are
// none). It reads exactly the frame's bytes with io.ReadFull and never
// buffers, so whatever follows the frame is still unread in r.
func Decode(r io.Reader) ([]string, error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, readError("initframe: reading header: ", err)
	}
	if string(h[:len(Magic)]) != Magic {
		return nil, &detailError{err: ErrBadMagic, suffix: ": got " + strconv.Quote(string(h[:len(Magic)]))}
	}
	if v := h[len(Magic)]; v != Version {
		return nil, &detailError{err: ErrBadVersion, suffix: ": got " + strconv.Itoa(int(v)) + ", want " + strconv.Itoa(Version)}
	}
	n := uint32(h[5])<<24 | uint32(h[6])<<16 | uint32(h[7])<<8 | uint32(h[8])
	if n > MaxPayload {
		return nil, &detailError{err: ErrTooLarge, suffix: ": " + strconv.FormatUint(uint64(n), 10) + " bytes, max " + strconv.Itoa(MaxPayload)}
	}
	if n == 0 {
		return nil, nil
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, readError("initframe: reading payload: ", err)
	}
	if payload[n-1] != 0 {
		return nil, &detailError{err: ErrMalformed, suffix: ": last entry is not NUL-terminated"}
	}
	// One copy for all entries; each entry is a substring of s.
	s := string(payload[:n-1])
	env := make([]string, 0, strings.Count(s, "\x00")+1)
	for i := 0; ; i++ {
		e, rest, more := strings.Cut(s, "\x00")
		if err := checkEntry(i, e); err != nil {
			return nil, err
		}
		env = append(env, e)
		if !more {
			return env, nil
		}
		s = rest
	}
}

// Merge returns base with over applied: an entry of over replaces the entry
// of base with the same key in place, and keys new to base are appended in
// the order they first appear in over. Each key appears once in the result;
// when a list repeats a key, its last value wins (as with os/exec), at the
// position of its first occurrence. An entry without '=' is keyed by its
// whole text. Neither input is modified.
func Merge(base, over []string) []string {
	out := make([]string, 0, len(base)+len(over))
	index := make(map[string]int, len(base)+len(over))
	for _, list := range [2][]string{base, over} {
		for _, e := range list {
			k := e
			if before, _, ok := strings.Cut(e, "="); ok {
				k = before
			}
			if i, ok := index[k]; ok {
				out[i] = e
				continue
			}
			index[k] = len(out)
			out = append(out, e)
		}
	}
	return out
}

// checkEntry validates entry i. Error messages name the entry's index and,
// once known to be well-formed, its key, but never its value.
func checkEntry(i int, e string) error {
	k, _, ok := strings.Cut(e, "=")
	switch {
	case !ok:
		return malformed(i, "missing '='")
	case k == "":
		return malformed(i, "empty key")
	case strings.IndexByte(k, 0) >= 0:
		return malformed(i, "NUL in key")
	case strings.IndexByte(e, 0) >= 0:
		return malformed(i, "NUL in value of "+strconv.Quote(k))
	}
	return nil
}

func malformed(i int, what string) error {
	return &detailError{err: ErrMalformed, suffix: ": entry " + strconv.Itoa(i) + ": " + what}
}

// readError wraps an io.ReadFull error. io.EOF becomes io.ErrUnexpectedEOF:
// the frame is mandatory, so running out of input before it is never clean.
func readError(prefix string, err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return &detailError{prefix: prefix, err: err}
}

// detailError is fmt.Errorf("prefix%wsuffix") without fmt, which (with
// reflect) would add about 200 KB to spawn-init.
type detailError struct {
	prefix string
	err    error
	suffix string
}

func (e *detailError) Error() string { return e.prefix + e.err.Error() + e.suffix }

func (e *detailError) Unwrap() error { return e.err }
