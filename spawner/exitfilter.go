package spawner

import (
	"bytes"
	"io"
	"strconv"
	"strings"
)

// readyRecord is what our init writes to stderr once it is about to block
// reading the request frame: the container is started and may be frozen.
const readyRecord = "\x00SPAWN-READY\n"

// exitMarker starts the exit record our init writes to stderr in
// supervisor mode (see cmd/spawn-init): "\x00SPAWN-EXIT <token> <code>\n".
const exitMarker = "\x00SPAWN-EXIT "

// maxExitRecord bounds a record's length, so a partial one is never held
// back for long.
const maxExitRecord = len(exitMarker) + 64 + 1 + 11 + 1

// exitFilter passes a program's stderr through, minus the init's exit
// record, which it parses and reports once. The record ends the program's
// stderr: the init writes it after the program has exited, and a pipe keeps
// order, so everything the program wrote is before it. Read returns EOF
// there, without waiting for the FIFO's own EOF, which comes only when the
// init and every process holding the FIFO are gone (~1 ms later here).
// What follows the record (from a leftover process of the program) is not
// the program's; Drain discards it. A NUL-led tail that may be the start of
// a record is held back until the next read or EOF.
type exitFilter struct {
	r       io.Reader
	record  []byte // exitMarker + token + " "
	onExit  func(code int)
	onReady func()
	ready   bool
	pending []byte
	out     []byte
	buf     []byte // read buffer, reused: stderr is read in small pieces
	eof     bool
	found   bool
}

func newExitFilter(r io.Reader, token string, onReady func(), onExit func(code int)) *exitFilter {
	return &exitFilter{r: r, record: []byte(exitMarker + token + " "), onExit: onExit, onReady: onReady}
}

func (f *exitFilter) Read(p []byte) (int, error) {
	for len(f.out) == 0 {
		if f.found {
			return 0, io.EOF
		}
		if f.eof {
			if len(f.pending) > 0 {
				f.out, f.pending = f.pending, nil
				break
			}
			return 0, io.EOF
		}
		if f.buf == nil {
			f.buf = make([]byte, 4<<10)
		}
		n, err := f.r.Read(f.buf)
		f.pending = append(f.pending, f.buf[:n]...)
		if err != nil {
			f.eof = true
		}
		f.scan()
	}
	n := copy(p, f.out)
	f.out = f.out[n:]
	return n, nil
}

// Drain reads and discards the rest of the stream, to its EOF, so nothing
// still writing to it blocks.
func (f *exitFilter) Drain() {
	f.pending, f.out = nil, nil
	if !f.eof {
		_, _ = io.Copy(io.Discard, f.r)
		f.eof = true
	}
}

// scan moves what is certainly not (part of) a record from pending to out,
// and consumes a complete record.
func (f *exitFilter) scan() {
	for {
		i := bytes.IndexByte(f.pending, 0)
		if f.found {
			return // the rest is not the program's (see exitFilter)
		}
		if i < 0 {
			f.out = append(f.out, f.pending...)
			f.pending = f.pending[:0]
			return
		}
		f.out = append(f.out, f.pending[:i]...)
		f.pending = f.pending[i:]
		rest := f.pending
		if !f.ready {
			// The init's ready record comes first, before any program output.
			if len(rest) < len(readyRecord) && strings.HasPrefix(readyRecord, string(rest)) && !f.eof {
				return
			}
			if strings.HasPrefix(string(rest), readyRecord) {
				f.ready = true
				f.pending = f.pending[len(readyRecord):]
				if f.onReady != nil {
					f.onReady()
				}
				continue
			}
		}
		if len(rest) < len(f.record) {
			if !f.found && bytes.HasPrefix(f.record, rest) && !f.eof {
				return // maybe a record, cut short: wait for more
			}
		} else if !f.found && bytes.HasPrefix(rest, f.record) {
			end := bytes.IndexByte(rest, '\n')
			if end < 0 && len(rest) < maxExitRecord && !f.eof {
				return
			}
			if end > 0 {
				if code, err := strconv.Atoi(string(rest[len(f.record):end])); err == nil {
					f.found = true
					f.pending = f.pending[end+1:]
					f.onExit(code)
					continue
				}
			}
		}
		// Not a record: pass the NUL on and keep scanning after it.
		f.out = append(f.out, f.pending[0])
		f.pending = f.pending[1:]
	}
}
