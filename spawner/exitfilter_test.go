package spawner

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestExitFilter(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef"
	rec := exitMarker + token + " 3\n"
	for _, tc := range []struct {
		name     string
		input    string
		want     string
		wantCode int // -1: no record
	}{
		{name: "record only", input: rec, want: "", wantCode: 3},
		{name: "text then record", input: "boom\n" + rec, want: "boom\n", wantCode: 3},
		{name: "text after record is not the program's", input: "a\n" + rec + "late\n", want: "a\n", wantCode: 3},
		{name: "no record", input: "plain stderr\n", want: "plain stderr\n", wantCode: -1},
		{name: "forged token", input: exitMarker + "ffffffffffffffffffffffffffffffff 0\n", want: exitMarker + "ffffffffffffffffffffffffffffffff 0\n", wantCode: -1},
		{name: "NULs in text", input: "x\x00y\x00\n" + rec, want: "x\x00y\x00\n", wantCode: 3},
		{name: "truncated record at EOF", input: "z" + exitMarker + token, want: "z" + exitMarker + token, wantCode: -1},
		{name: "second record ignored", input: rec + exitMarker + token + " 9\n", want: "", wantCode: 3},
	} {
		for _, split := range []bool{false, true} {
			name := tc.name
			if split {
				name += "/one byte reads"
			}
			t.Run(name, func(t *testing.T) {
				var r io.Reader = strings.NewReader(tc.input)
				if split {
					r = iotest.OneByteReader(r)
				}
				code, calls := -1, 0
				f := newExitFilter(r, token, nil, func(c int) { code = c; calls++ })
				got, err := io.ReadAll(f)
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != tc.want {
					t.Errorf("output = %q, want %q", got, tc.want)
				}
				if code != tc.wantCode {
					t.Errorf("code = %d, want %d", code, tc.wantCode)
				}
				if calls > 1 {
					t.Errorf("onExit called %d times", calls)
				}
			})
		}
	}
}

// TestExitFilterEndsAtRecord: the program's stderr ends at the exit
// record, while the FIFO is still open (the init and the runtime hold it a
// while longer); Drain then reads the rest to the FIFO's EOF.
func TestExitFilterEndsAtRecord(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef"
	pr, pw := io.Pipe()
	f := newExitFilter(pr, token, nil, func(int) {})
	defer pw.Close()
	go func() {
		_, _ = pw.Write([]byte("last words\n" + exitMarker + token + " 0\n"))
	}()
	type result struct {
		b   []byte
		err error
	}
	res := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(f)
		res <- result{b, err}
	}()
	select {
	case r := <-res:
		if r.err != nil || string(r.b) != "last words\n" {
			t.Fatalf("output %q, %v; want %q", r.b, r.err, "last words\n")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no EOF at the exit record: the filter waits for the stream's end")
	}
	drained := make(chan struct{})
	go func() {
		f.Drain()
		close(drained)
	}()
	// A leftover process writes on: Drain takes it, so it never blocks.
	wrote := make(chan error, 1)
	go func() {
		_, err := pw.Write([]byte("from an orphan\n"))
		wrote <- err
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write after the record blocked: Drain does not read")
	}
	select {
	case <-drained:
		t.Fatal("Drain returned before the stream's EOF")
	default:
	}
	_ = pw.Close()
	<-drained
}

func TestExitFilterReady(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef"
	in := readyRecord + "hello\n" + readyRecord + exitMarker + token + " 0\n"
	for _, split := range []bool{false, true} {
		var r io.Reader = strings.NewReader(in)
		if split {
			r = iotest.OneByteReader(r)
		}
		readies, code := 0, -1
		f := newExitFilter(r, token, func() { readies++ }, func(c int) { code = c })
		got, err := io.ReadAll(f)
		if err != nil {
			t.Fatal(err)
		}
		// Only the first ready record is the init's; a later one is program
		// output and passes through.
		if want := "hello\n" + readyRecord; string(got) != want {
			t.Errorf("split=%v: output %q, want %q", split, got, want)
		}
		if readies != 1 || code != 0 {
			t.Errorf("split=%v: readies=%d code=%d, want 1 and 0", split, readies, code)
		}
	}
}
