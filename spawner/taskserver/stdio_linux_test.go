package taskserver

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func mkfifo(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	return p
}

// fdFlags are f's file status flags, read without os.File.Fd (which would
// switch the descriptor to blocking itself).
func fdFlags(t *testing.T, f *os.File) int {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0)
	}); err != nil {
		t.Fatal(err)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
	return flags
}

// openStdioBounded runs openStdio, failing the test if it hangs.
func openStdioBounded(t *testing.T, stdin, stdout, stderr string) ([3]*os.File, error) {
	t.Helper()
	type result struct {
		files [3]*os.File
		err   error
	}
	ch := make(chan result, 1)
	go func() {
		f, err := openStdio(stdin, stdout, stderr)
		ch <- result{f, err}
	}()
	select {
	case r := <-ch:
		for _, f := range r.files {
			if f != nil && r.err == nil {
				t.Cleanup(func() { f.Close() })
			}
		}
		return r.files, r.err
	case <-time.After(5 * time.Second):
		t.Fatal("openStdio hung")
		return [3]*os.File{}, nil
	}
}

func TestOpenStdioEmptyPaths(t *testing.T) {
	files, err := openStdioBounded(t, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range files {
		if f != nil {
			t.Errorf("files[%d] = %v, want nil for an empty path", i, f.Name())
		}
	}
}

// TestOpenStdioStdin: the container's stdin is the FIFO's read side, in
// blocking mode (the program inherits it), and it sees the client's data
// and then EOF when the client closes its end.
func TestOpenStdioStdin(t *testing.T) {
	p := mkfifo(t, "stdin")
	// No writer yet: opening must not wait for one.
	files, err := openStdioBounded(t, p, "", "")
	if err != nil {
		t.Fatal(err)
	}
	in := files[0]
	if in == nil || files[1] != nil || files[2] != nil {
		t.Fatalf("files = %v, want only stdin", files)
	}
	flags := fdFlags(t, in)
	if flags&unix.O_NONBLOCK != 0 {
		t.Error("stdin is left non-blocking")
	}
	if flags&unix.O_ACCMODE != unix.O_RDONLY {
		t.Errorf("stdin access mode = %#x, want O_RDONLY", flags&unix.O_ACCMODE)
	}
	w, err := os.OpenFile(p, os.O_WRONLY, 0) // the client's end
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteString("hello"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	done := make(chan struct{})
	var got []byte
	var rerr error
	go func() {
		defer close(done)
		got, rerr = io.ReadAll(in)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("reading stdin did not end at the writer's close")
	}
	if rerr != nil || string(got) != "hello" {
		t.Errorf("read %q, %v; want \"hello\", EOF", got, rerr)
	}
}

func TestOpenStdioOutputs(t *testing.T) {
	tests := []struct {
		name     string
		reader   bool // the client's read side is open
		wantMode int
	}{
		// The client reads: the container writes to it directly.
		{name: "reader present", reader: true, wantMode: unix.O_WRONLY},
		// No reader yet: we hold both ends, so the container's writes
		// never fail with EPIPE and opening never hangs.
		{name: "no reader", reader: false, wantMode: unix.O_RDWR},
	}
	for _, tc := range tests {
		for _, stream := range []int{1, 2} {
			t.Run(tc.name+map[int]string{1: ", stdout", 2: ", stderr"}[stream], func(t *testing.T) {
				p := mkfifo(t, "out")
				var r *os.File
				if tc.reader {
					fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
					if err != nil {
						t.Fatal(err)
					}
					r = os.NewFile(uintptr(fd), p)
					defer r.Close()
				}
				paths := [3]string{}
				paths[stream] = p
				files, err := openStdioBounded(t, paths[0], paths[1], paths[2])
				if err != nil {
					t.Fatalf("openStdio: %v", err)
				}
				f := files[stream]
				if f == nil {
					t.Fatal("no file for the stream")
				}
				for i := range files {
					if i != stream && files[i] != nil {
						t.Errorf("files[%d] opened for an empty path", i)
					}
				}
				flags := fdFlags(t, f)
				if flags&unix.O_NONBLOCK != 0 {
					t.Error("left non-blocking")
				}
				if got := flags & unix.O_ACCMODE; got != tc.wantMode {
					t.Errorf("access mode = %#x, want %#x", got, tc.wantMode)
				}
				if _, err := f.Write([]byte("out")); err != nil {
					t.Fatalf("writing: %v", err)
				}
				if r != nil {
					b := make([]byte, 8)
					n, err := r.Read(b)
					if err != nil || string(b[:n]) != "out" {
						t.Errorf("reader got %q, %v; want \"out\"", b[:n], err)
					}
				}
			})
		}
	}
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	return len(ents)
}

// TestOpenStdioErrors: a missing FIFO is an error naming it, and the
// streams already opened are closed again.
func TestOpenStdioErrors(t *testing.T) {
	in := mkfifo(t, "stdin")
	out := mkfifo(t, "stdout")
	missing := filepath.Join(t.TempDir(), "missing")
	tests := []struct {
		name                  string
		stdin, stdout, stderr string
	}{
		{name: "missing stdin", stdin: missing},
		{name: "missing stdout after stdin", stdin: in, stdout: missing},
		{name: "missing stderr after both", stdin: in, stdout: out, stderr: missing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := openFDs(t)
			_, err := openStdioBounded(t, tc.stdin, tc.stdout, tc.stderr)
			if err == nil {
				t.Fatal("no error for a missing FIFO")
			}
			if !errors.Is(err, unix.ENOENT) {
				t.Errorf("error %v is not ENOENT", err)
			}
			if got := openFDs(t); got != before {
				t.Errorf("open descriptors: %d before, %d after a failed openStdio", before, got)
			}
		})
	}
}
