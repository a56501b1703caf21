package taskserver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
)

// fakeCrun writes a shell script standing in for crun into a new crun
// root's parent and returns a crun that runs it, with a running reaper.
// The script sees crun's arguments: $1 --root, $2 the root, $3 --log,
// $4 file:<log>, then the command. It appends its arguments from the
// command on to <root>/calls.
func fakeCrun(t *testing.T, body string) *crun {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "crun")
	src := "#!/bin/sh\nlog=${4#file:}\nroot=$2\nshift 4\necho \"$@\" >> \"$root/calls\"\n" + body + "\n"
	if err := os.WriteFile(script, []byte(src), 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	r := newReaper()
	runReaper(t, r)
	return &crun{binary: script, root: root, reaper: r}
}

func calls(t *testing.T, c *crun) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.root, "calls"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func TestCrunRun(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		wantErr []string // substrings of the error; nil: success
	}{
		{name: "success", body: "exit 0"},
		{
			name: "failure with a message", body: `printf 'warning: x\nerror: boom\n' >> "$log"; exit 1`,
			wantErr: []string{"crun state", "exit status 1", "warning: x; error: boom"},
		},
		{name: "failure without a message", body: "exit 2", wantErr: []string{"exit status 2", "no message"}},
		{name: "killed", body: "kill -9 $$", wantErr: []string{"killed by SIGKILL"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := fakeCrun(t, tc.body)
			logPath := filepath.Join(t.TempDir(), "crun.log")
			before := openFDs(t)
			err := c.run(context.Background(), logPath, [3]*os.File{}, "state", "c1")
			if got := openFDs(t); got != before {
				t.Errorf("open descriptors: %d before run, %d after", before, got)
			}
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("run: %v", err)
				}
			} else {
				if err == nil {
					t.Fatal("run succeeded")
				}
				for _, s := range tc.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q lacks %q", err, s)
					}
				}
			}
			if got := calls(t, c); len(got) != 1 || got[0] != "state c1" {
				t.Errorf("crun called with %q, want [\"state c1\"]", got)
			}
		})
	}
}

// TestCrunRunStdio: the given streams are crun's (and so the container's);
// missing ones are /dev/null.
func TestCrunRunStdio(t *testing.T) {
	c := fakeCrun(t, `echo to-stdout; echo to-stderr >&2; readlink /proc/self/fd/0 > "$root/stdin"`)
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := c.run(context.Background(), filepath.Join(t.TempDir(), "log"), [3]*os.File{nil, out, out}, "x"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out.Name()); string(b) != "to-stdout\nto-stderr\n" {
		t.Errorf("output = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(c.root, "stdin")); strings.TrimSpace(string(b)) != os.DevNull {
		t.Errorf("stdin = %q, want %s", b, os.DevNull)
	}
}

// TestCrunRunCanceled: a crun that hangs is killed when ctx ends, and run
// returns the context's error at once.
func TestCrunRunCanceled(t *testing.T) {
	c := fakeCrun(t, `echo $$ > "$root/pid"; exec sleep 60`)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.run(ctx, filepath.Join(t.TempDir(), "log"), [3]*os.File{}, "create")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("run = %v, want the deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("run returned after %v", d)
	}
	b, err := os.ReadFile(filepath.Join(c.root, "pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	// It was killed: its exit reaches the reaper (a waiter stays
	// registered by run's select; it takes the status).
	deadline := time.Now().Add(10 * time.Second)
	for unix.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("crun %d still alive after the cancel", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCrunCreatePidFile(t *testing.T) {
	tests := []struct {
		name    string
		pid     string // written to --pid-file; "" writes none
		want    int
		wantErr bool
	}{
		{name: "pid", pid: "4242\n", want: 4242},
		{name: "no pid file", wantErr: true},
		{name: "garbage", pid: "abc", wantErr: true},
		{name: "zero", pid: "0", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := ""
			if tc.pid != "" {
				body = `while [ $# -gt 0 ]; do [ "$1" = --pid-file ] && printf '` + tc.pid + `' > "$2"; shift; done`
			}
			c := fakeCrun(t, body)
			bundle := t.TempDir()
			pid, err := c.create(context.Background(), "c1", bundle, [3]*os.File{})
			if tc.wantErr {
				if err == nil {
					t.Errorf("create = %d, want an error", pid)
				}
				return
			}
			if err != nil || pid != tc.want {
				t.Fatalf("create = %d, %v; want %d", pid, err, tc.want)
			}
			want := "create --bundle " + bundle + " --pid-file " + filepath.Join(bundle, "init.pid") + " --no-new-keyring c1"
			if got := calls(t, c); got[0] != want {
				t.Errorf("crun called with %q, want %q", got[0], want)
			}
		})
	}
}

// TestServicePauseResume: Pause and Resume run crun and track the state;
// a failing crun changes nothing.
func TestServicePauseResume(t *testing.T) {
	tests := []struct {
		name string
		body string
		want tasktypes.Status
	}{
		{name: "crun succeeds", body: "exit 0", want: tasktypes.Status_PAUSED},
		{name: "crun fails", body: "exit 1", want: tasktypes.Status_RUNNING},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t)
			s.crun = fakeCrun(t, tc.body)
			v := &service{s: s}
			ctx := context.Background()
			addTask(t, s, "c", fakePid).started = true
			_, err := v.Pause(ctx, &taskAPI.PauseRequest{ID: "c"})
			if (err == nil) != (tc.want == tasktypes.Status_PAUSED) {
				t.Errorf("Pause: %v", err)
			}
			if st, _ := v.State(ctx, &taskAPI.StateRequest{ID: "c"}); st.Status != tc.want {
				t.Errorf("State after Pause = %v, want %v", st.Status, tc.want)
			}
			_, _ = v.Resume(ctx, &taskAPI.ResumeRequest{ID: "c"})
			if st, _ := v.State(ctx, &taskAPI.StateRequest{ID: "c"}); st.Status != tasktypes.Status_RUNNING {
				t.Errorf("State after Resume = %v, want RUNNING", st.Status)
			}
			if got := calls(t, s.crun); len(got) != 2 || got[0] != "pause c" || got[1] != "resume c" {
				t.Errorf("crun calls = %q", got)
			}
		})
	}
}

// TestSweepLeftovers: every container directory in crun's root is deleted
// by crun; when crun fails, its state directory is removed anyway.
func TestSweepLeftovers(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		wantState bool // the state directories remain (crun's job)
	}{
		{name: "crun deletes", body: "exit 0", wantState: true},
		{name: "crun fails", body: "exit 1", wantState: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t)
			s.crun = fakeCrun(t, tc.body)
			s.cfg.StateDir = t.TempDir()
			for _, id := range []string{"a", "b"} {
				if err := os.MkdirAll(filepath.Join(s.crun.root, id), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(s.crun.root, "a", "status"), []byte(`{"bundle":"`+t.TempDir()+`"}`), 0o600); err != nil {
				t.Fatal(err)
			}
			s.SweepLeftovers()
			got := calls(t, s.crun)
			if len(got) != 2 || got[0] != "delete --force a" || got[1] != "delete --force b" {
				t.Errorf("crun calls = %q, want delete --force of a and b", got)
			}
			for _, id := range []string{"a", "b"} {
				_, err := os.Stat(filepath.Join(s.crun.root, id))
				if exists := err == nil; exists != tc.wantState {
					t.Errorf("state of %s exists: %v, want %v", id, exists, tc.wantState)
				}
			}
		})
	}
}

func TestCheckHost(t *testing.T) {
	crunFile := filepath.Join(t.TempDir(), "crun")
	if err := os.WriteFile(crunFile, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string
		skip    func() string
		wantMsg string
	}{
		{name: "missing crun", path: filepath.Join(t.TempDir(), "nope"), wantMsg: "crun not found"},
		{name: "not root", path: crunFile, wantMsg: "needs root", skip: func() string {
			if os.Geteuid() == 0 {
				return "running as root: the root check can't fail"
			}
			return ""
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != nil {
				if why := tc.skip(); why != "" {
					t.Skip(why)
				}
			}
			err := CheckHost(tc.path)
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("CheckHost = %v, want ErrUnsupported", err)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q lacks %q", err, tc.wantMsg)
			}
		})
	}
}
