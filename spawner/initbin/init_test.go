//go:build linux

package initbin

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-spawn/caddy-spawn/internal/initframe"
)

// The init's exit codes, records and the frame entry that switches on
// supervisor mode (cmd/spawn-init/spawn-init.c).
const (
	exitFrame    = 125
	exitNotFound = 127
	readyRecord  = "\x00SPAWN-READY\n"
	tokenKey     = "SPAWN_EXIT_TOKEN"
)

// initPath is the spawn-init under test: the embedded binary, the one
// containers run (TestBinaryIsFresh checks that it is built from the
// source), installed by TestMain.
var initPath string

func TestMain(m *testing.M) {
	if Binary() == nil {
		// Nothing embedded for this architecture: only the checks of the
		// committed files run.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "spawn-init-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if initPath, err = Install(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func mustEncode(t testing.TB, env ...string) []byte {
	t.Helper()
	b, err := initframe.Encode(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// runInit runs argv (the init, or qemu running it) with env (none if nil)
// and stdin, and returns its exit code and output.
func runInit(t *testing.T, argv, env []string, stdin []byte) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

// tempFile is a new file in a test directory holding content, positioned at
// its start: a stdin for ForkExec, or (empty) a place for its output.
func tempFile(t *testing.T, name string, content []byte) *os.File {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.Write(content); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	return f
}

// waitPid waits for the ForkExec'd pid, killing it (and failing) if it has
// not exited within 30 s, as waitOrKill does for an exec.Cmd.
func waitPid(t *testing.T, pid int, what string) syscall.WaitStatus {
	t.Helper()
	done := make(chan syscall.WaitStatus, 1)
	go func() {
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, 0, nil)
		done <- ws
	}()
	select {
	case ws := <-done:
		return ws
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(pid, syscall.SIGKILL)
		<-done
		t.Fatalf("init still running 30 s %s", what)
		return 0
	}
}

func TestInit(t *testing.T) {
	// A PATH directory whose "sh" is a non-executable file, and one whose
	// "sh" is a directory: the lookup must skip both, as execvp does.
	noexec := t.TempDir()
	if err := os.WriteFile(filepath.Join(noexec, "sh"), []byte("#!/bin/false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	shdir := t.TempDir()
	if err := os.Mkdir(filepath.Join(shdir, "sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	const script = `echo "$FOO $BAR"; cat`
	// A program path too long for any message.
	long := strings.Repeat("/x", 5000)
	frame := mustEncode(t, "FOO=frame")
	base := []string{"BAR=base", "FOO=base"}

	tests := []struct {
		name       string
		args       []string
		env        []string
		stdin      []byte
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{
			name:       "absolute path",
			args:       []string{"/bin/sh", "-c", script},
			env:        base,
			stdin:      append(frame, "body-bytes"...),
			wantStdout: "frame base\nbody-bytes",
		},
		{
			name:       "PATH lookup skips missing and non-executable",
			args:       []string{"sh", "-c", script},
			env:        append([]string{"PATH=/nonexistent:" + noexec + ":" + shdir + "::/usr/bin:/bin"}, base...),
			stdin:      append(frame, "body-bytes"...),
			wantStdout: "frame base\nbody-bytes",
		},
		{
			name:       "PATH from the frame",
			args:       []string{"sh", "-c", script},
			env:        append([]string{"PATH=/nonexistent"}, base...),
			stdin:      append(mustEncode(t, "FOO=frame", "PATH=/usr/bin:/bin"), "body-bytes"...),
			wantStdout: "frame base\nbody-bytes",
		},
		{
			name:       "default PATH when unset",
			args:       []string{"sh", "-c", script},
			env:        base,
			stdin:      append(frame, "body-bytes"...),
			wantStdout: "frame base\nbody-bytes",
		},
		{
			name:       "merged environment",
			args:       []string{"/bin/sh", "-c", `echo "$A|$B|$C|$EQ"; cat`},
			env:        []string{"A=base", "B=base"},
			stdin:      append(mustEncode(t, "B=frame", "C=new", "EQ=x=y", "A="), "\x00binary\nbody"...),
			wantStdout: "|frame|new|x=y\n\x00binary\nbody",
		},
		{
			name:       "an entry without '=' is no PATH",
			args:       []string{"sh", "-c", `echo "$FOO"`},
			env:        []string{"PATH", "FOO=base"},
			stdin:      frame,
			wantStdout: "frame\n",
		},
		{
			name:       "empty frame, empty body",
			args:       []string{"/bin/sh", "-c", script},
			env:        base,
			stdin:      mustEncode(t),
			wantStdout: "base base\n",
		},
		{
			name:       "argv[0] kept as given",
			args:       []string{"sh", "-c", `echo "$0"`},
			env:        []string{"PATH=/usr/bin:/bin"},
			stdin:      frame,
			wantStdout: "sh\n",
		},
		{
			name:       "malformed frame",
			args:       []string{"/bin/sh", "-c", script},
			env:        base,
			stdin:      []byte("GET / HTTP/1.1\r\n\r\n"),
			wantCode:   125,
			wantStderr: "spawn-init: reading request frame: initframe: bad magic: got \"GET \"\n",
		},
		{
			name:       "bad entry",
			args:       []string{"/bin/sh", "-c", script},
			env:        base,
			stdin:      []byte("SPWN\x01\x00\x00\x00\x04FOO\x00"),
			wantCode:   125,
			wantStderr: "spawn-init: reading request frame: initframe: malformed payload: entry 0: missing '='\n",
		},
		{
			name:       "no frame",
			args:       []string{"/bin/sh", "-c", script},
			env:        base,
			stdin:      nil,
			wantCode:   125,
			wantStderr: "spawn-init: reading request frame: initframe: reading header: unexpected EOF\n",
		},
		{
			name:       "no program",
			args:       nil,
			stdin:      frame,
			wantCode:   125,
			wantStderr: "spawn-init: usage: spawn-init <prog> [args...]\n",
		},
		{
			name:       "missing program in PATH",
			args:       []string{"no-such-program"},
			env:        []string{"PATH=/nonexistent:/usr/bin:/bin"},
			stdin:      frame,
			wantCode:   127,
			wantStderr: "spawn-init: no-such-program: not found in PATH\n",
		},
		{
			name:       "missing program by path",
			args:       []string{"/nonexistent/prog"},
			stdin:      frame,
			wantCode:   127,
			wantStderr: "spawn-init: /nonexistent/prog: no such file or directory\n",
		},
		{
			name:       "only non-executable in PATH",
			args:       []string{"sh"},
			env:        []string{"PATH=" + noexec + ":" + shdir},
			stdin:      frame,
			wantCode:   126,
			wantStderr: "spawn-init: sh: permission denied\n",
		},
		{
			name:       "not executable by path",
			args:       []string{filepath.Join(noexec, "sh")},
			stdin:      frame,
			wantCode:   126,
			wantStderr: "spawn-init: " + filepath.Join(noexec, "sh") + ": permission denied\n",
		},
		{
			name:       "message cut short ends its line",
			args:       []string{long},
			stdin:      frame,
			wantCode:   126,
			wantStderr: ("spawn-init: " + long)[:8191] + "\n", // 8 KiB in all
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runInit(t, append([]string{initPath}, tc.args...), tc.env, tc.stdin)
			if code != tc.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tc.wantCode, stderr)
			}
			if stdout != tc.wantStdout {
				t.Errorf("stdout = %q, want %q", stdout, tc.wantStdout)
			}
			// The ready record comes first, whatever happens next (the usage
			// error is the only case that fails before it).
			gotStderr := stderr
			if rest, ok := strings.CutPrefix(gotStderr, readyRecord); ok {
				gotStderr = rest
			} else if tc.wantCode != exitFrame || len(tc.args) > 0 {
				t.Errorf("stderr %q does not start with the ready record", stderr)
			}
			if gotStderr != tc.wantStderr {
				t.Errorf("stderr = %q, want %q", gotStderr, tc.wantStderr)
			}
		})
	}
}

// TestInitNonblockingStdin hands the init a non-blocking stdin with no data
// yet, which os/exec cannot do (it makes inherited files blocking).
func TestInitNonblockingStdin(t *testing.T) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	w := os.NewFile(uintptr(p[1]), "stdin-w")
	defer w.Close()
	if err := syscall.SetNonblock(p[0], true); err != nil {
		t.Fatal(err)
	}
	out, err := os.CreateTemp(t.TempDir(), "stdout")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	// The program reads exactly the body, which is in the pipe before it
	// starts: stdin stays non-blocking for it (the init leaves its flags
	// alone), so a read of the empty pipe before our Close (cat's
	// read for EOF, when this test is descheduled between Write and Close)
	// would fail with EAGAIN.
	pid, err := syscall.ForkExec(initPath, []string{initPath, "/bin/sh", "-c", `echo "$FOO"; head -c 10`}, &syscall.ProcAttr{
		Env:   []string{"FOO=base"},
		Files: []uintptr{uintptr(p[0]), out.Fd(), os.Stderr.Fd()},
	})
	syscall.Close(p[0])
	if err != nil {
		t.Fatal(err)
	}
	// Let the init reach its first read, find the pipe empty and wait.
	time.Sleep(100 * time.Millisecond)
	if _, err := w.Write(append(mustEncode(t, "FOO=frame"), "body-bytes"...)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	ws := waitPid(t, pid, "after its frame and body")
	got, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	if ws.ExitStatus() != 0 || string(got) != "frame\nbody-bytes" {
		t.Fatalf("exit status %d, stdout %q; want 0, %q", ws.ExitStatus(), got, "frame\nbody-bytes")
	}
}

// BenchmarkStart compares running /bin/true directly with running it
// through spawn-init; the difference is the init's cost per request.
func BenchmarkStart(b *testing.B) {
	frame := mustEncode(b, "REQUEST_METHOD=GET", "QUERY_STRING=a=b", "SCRIPT_NAME=/fn")
	for _, bc := range []struct {
		name string
		args []string
	}{
		{name: "direct", args: []string{"/bin/true"}},
		{name: "via-init", args: []string{initPath, "/bin/true"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				cmd := exec.Command(bc.args[0], bc.args[1:]...)
				cmd.Stdin = bytes.NewReader(frame)
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%v: %s", err, strings.TrimSpace(string(out)))
				}
			}
		})
	}
}

func TestInitSupervisor(t *testing.T) {
	const token = "00112233445566778899aabbccddeeff"
	for _, tc := range []struct {
		name       string
		args       []string
		wantCode   int
		wantOut    string
		wantStderr string // between the ready record and the exit record
	}{
		{
			name:       "exit code reported",
			args:       []string{"/bin/sh", "-c", `echo "out $SPAWN_EXIT_TOKEN."; echo err >&2; cat; exit 3`},
			wantCode:   3,
			wantOut:    "out .\nbody",
			wantStderr: "err\n",
		},
		{
			name:     "signal reported as 128+n",
			args:     []string{"/bin/sh", "-c", "kill -TERM $$"},
			wantCode: 128 + int(syscall.SIGTERM),
		},
		{
			name:       "missing program reported",
			args:       []string{"/nonexistent/prog"},
			wantCode:   exitNotFound,
			wantStderr: "spawn-init: /nonexistent/prog: no such file or directory\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runInit(t, append([]string{initPath}, tc.args...), os.Environ(),
				append(mustEncode(t, tokenKey+"="+token), "body"...))
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tc.wantCode, stderr)
			}
			if stdout != tc.wantOut {
				t.Errorf("stdout %q, want %q (the token must not reach the program)", stdout, tc.wantOut)
			}
			want := readyRecord + tc.wantStderr + fmt.Sprintf("\x00SPAWN-EXIT %s %d\n", token, tc.wantCode)
			if stderr != want {
				t.Errorf("stderr %q, want %q", stderr, want)
			}
		})
	}
}

// TestInitOwnEnvironment gives the init an environment os/exec would have
// cleaned up: a repeated key keeps its first value and an empty entry is
// dropped, as Go's syscall.Environ did for the Go init.
func TestInitOwnEnvironment(t *testing.T) {
	stdin, out := tempFile(t, "stdin", mustEncode(t, "C=frame")), tempFile(t, "stdout", nil)
	// /usr/bin/env prints its environment as it got it, one per line.
	pid, err := syscall.ForkExec(initPath, []string{initPath, "/usr/bin/env"}, &syscall.ProcAttr{
		Env:   []string{"A=first", "", "A=second", "K=a", "K", "K=b", "B=base", "C=base"},
		Files: []uintptr{stdin.Fd(), out.Fd(), os.Stderr.Fd()},
	})
	if err != nil {
		t.Fatal(err)
	}
	ws := waitPid(t, pid, "running env")
	got, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	// syscall.Environ keeps the first K=a and K (no '='), drops K=b; Merge
	// then keys K=a and K alike, and the last wins.
	if want := "A=first\nK\nB=base\nC=frame\n"; ws.ExitStatus() != 0 || string(got) != want {
		t.Fatalf("exit status %d, environment %q; want 0, %q", ws.ExitStatus(), got, want)
	}
}

// TestInitSupervisorWithoutStdout starts the init with fd 1 closed: the
// descriptor it takes for signals must not be one it closes for the
// program, or it never learns of the exit.
func TestInitSupervisorWithoutStdout(t *testing.T) {
	const token = "00112233445566778899aabbccddeeff"
	stdin, stderr := tempFile(t, "stdin", mustEncode(t, tokenKey+"="+token)), tempFile(t, "stderr", nil)
	closed := ^uintptr(0) // -1: closed in the child
	pid, err := syscall.ForkExec(initPath, []string{initPath, "/bin/sh", "-c", "exit 3"}, &syscall.ProcAttr{
		Files: []uintptr{stdin.Fd(), closed, stderr.Fd()},
	})
	if err != nil {
		t.Fatal(err)
	}
	ws := waitPid(t, pid, "with fd 1 closed, after its program exited")
	got, _ := os.ReadFile(stderr.Name())
	want := readyRecord + "\x00SPAWN-EXIT " + token + " 3\n"
	if ws.ExitStatus() != 3 || string(got) != want {
		t.Fatalf("exit status %d, stderr %q; want 3, %q", ws.ExitStatus(), got, want)
	}
}

// TestInitSignalBeforeFrame: the init handles signals from its start (to
// forward them later), so one that comes while it waits for its frame must
// still end it, with 128+n.
func TestInitSignalBeforeFrame(t *testing.T) {
	cmd := exec.Command(initPath, "/bin/sh", "-c", "exit 0")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	rec := make([]byte, len(readyRecord))
	if _, err := io.ReadFull(stderr, rec); err != nil || string(rec) != readyRecord {
		t.Fatalf("ready record %q, %v", rec, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = waitOrKill(t, cmd, "after SIGTERM while waiting for its frame")
	ee, ok := errors.AsType[*exec.ExitError](err)
	if !ok || ee.ExitCode() != 128+int(syscall.SIGTERM) {
		t.Fatalf("init waiting for its frame, SIGTERM: %v, want exit code %d", err, 128+int(syscall.SIGTERM))
	}
}

func TestInitSupervisorForwardsSignal(t *testing.T) {
	const token = "00112233445566778899aabbccddeeff"
	// The program says it is up, then waits; its trap proves the signal
	// came through the init.
	cmd := exec.Command(initPath, "/bin/sh", "-c", `trap 'echo got USR1; exit 7' USR1; echo up; while :; do sleep 0.01; done`)
	cmd.Stdin = bytes.NewReader(mustEncode(t, tokenKey+"="+token))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 3)
	if _, err := io.ReadFull(out, line); err != nil || string(line) != "up\n" {
		t.Fatalf("program's first line %q, %v", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	rest, _ := io.ReadAll(out)
	err = waitOrKill(t, cmd, "after SIGUSR1 to the init")
	ee, ok := errors.AsType[*exec.ExitError](err)
	if !ok || ee.ExitCode() != 7 || string(rest) != "got USR1\n" {
		t.Fatalf("after SIGUSR1: %v, output %q; want exit code 7 and %q", err, rest, "got USR1\n")
	}
}

// waitOrKill waits for cmd, killing it (and failing) if it has not exited
// within 30 s: a lost signal must fail the test, not hang it.
func waitOrKill(t *testing.T, cmd *exec.Cmd, what string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("init still running 30 s %s", what)
		return nil
	}
}
