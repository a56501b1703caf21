//go:build linux

// Command spawn-init is the first process of every caddy-spawn container,
// bind-mounted read-only at /.spawn/init:
//
//	/.spawn/init <prog> [args...]
//
// It blocks reading one request frame (see internal/initframe) from stdin,
// merges the environment it carries over its own (the image and route
// environment from the OCI spec; the frame wins on duplicate keys), resolves
// <prog> like execvp and execs it. It reads exactly the frame's bytes from
// fd 0, so the request body that follows is left for the program.
//
// Exit codes, as in a shell: 125 for a usage or frame error, 126 when the
// program exists but cannot be executed, 127 when it is not found. The
// message goes to stderr, prefixed "spawn-init: ".
//
// Supervisor mode: when the frame carries SPAWN_EXIT_TOKEN=<hex>, the init
// removes it from the environment and, instead of exec'ing, starts the
// program as its child and stays PID 1: it closes its own stdin and stdout
// (so the program alone holds them and EOF means the program is done),
// forwards signals, reaps orphans, and when the program exits writes one
// record to stderr,
//
//	"\x00SPAWN-EXIT " <token> " " <exit code> "\n"
//
// in a single write, then exits with the same code (128+n for signal n).
// The host reads the exit status from that record instead of waiting for
// containerd's exit event (~2 ms later). The token is random per request
// and the init makes itself non-dumpable, so the program can't read it
// from /proc/1/mem and forge a record.
//
// Before reading, it writes the record "\x00SPAWN-READY\n" to stderr: the
// host freezes pooled containers only after it, and strips it. From then
// on it handles the signals it forwards in supervisor mode; one of them
// before the program runs (SIGWINCH aside) ends it with 128+n.
//
// It must stay tiny: it is paused in every pooled container. Standard
// library and initframe only, no fmt.
package main

import (
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/caddy-spawn/caddy-spawn/internal/initframe"
)

const (
	exitFrame    = 125
	exitNoExec   = 126
	exitNotFound = 127
)

// defaultPath is searched when the environment has no PATH. It is the PATH
// containerd gives Linux images that set none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func main() {
	if len(os.Args) < 2 || os.Args[1] == "" {
		fail(exitFrame, "usage: spawn-init <prog> [args...]")
	}
	// One P. The init mostly waits in a blocking syscall (the frame, then
	// the program's exit). With a second, idle P the runtime's sysmon
	// neither hands the syscall's P off nor sleeps: it wakes every 20 µs
	// for the first milliseconds after each wake-up, which here is the
	// whole of a request, competing with the program for the CPUs. With
	// one, it hands the P off and sleeps until the syscall returns.
	runtime.GOMAXPROCS(1)
	// Whatever does not depend on the request is done while the container
	// is made, not after its thaw: signal handling (and the threads Go
	// starts for it) and the non-dumpable flag.
	sup := newSupervisor()
	// Tell the host we are up and about to wait: only now may it freeze us
	// (freezing runc's exec of this binary can wedge the cgroup freezer).
	_, _ = syscall.Write(2, []byte(readyRecord))
	frame, err := initframe.Decode(stdin{})
	if err != nil {
		fail(exitFrame, "reading request frame: "+err.Error())
	}
	env := initframe.Merge(syscall.Environ(), frame)
	if token, rest, ok := takeToken(env); ok {
		sup.run(token, os.Args[1], os.Args[1:], rest)
	}
	code, msg := execvp(os.Args[1], os.Args[1:], env)
	fail(code, msg)
}

// readyRecord is written to stderr once, before reading the frame; the
// host strips it from the program's stderr.
const readyRecord = "\x00SPAWN-READY\n"

// tokenKey is the frame entry that switches on supervisor mode.
const tokenKey = "SPAWN_EXIT_TOKEN"

// takeToken removes tokenKey from env and returns its value, if valid.
func takeToken(env []string) (token string, rest []string, ok bool) {
	rest = env[:0:0]
	for _, e := range env {
		if v, found := strings.CutPrefix(e, tokenKey+"="); found {
			token = v
			continue
		}
		rest = append(rest, e)
	}
	if len(token) < 16 || len(token) > 64 || strings.Trim(token, "0123456789abcdef") != "" {
		return "", env, false
	}
	return token, rest, true
}

// supervisor forwards the signals the init gets to the program, once it
// runs. A signal that comes before (while the init waits for its frame)
// ends the init, with 128+n as a shell would report it: PID 1 can't
// re-raise a signal at itself.
type supervisor struct {
	mu  sync.Mutex
	pid int // the program, once started
}

// newSupervisor installs the signal handling. The exec path needs none of
// it and loses it at exec; the flag too is reset by exec.
func newSupervisor() *supervisor {
	// Keep the program (same uid) from reading the token out of our memory.
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0) //nolint:dogsled // prctl can't fail with these arguments
	s := &supervisor{}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
	go func() {
		for sig := range sigs {
			s.mu.Lock()
			pid := s.pid
			s.mu.Unlock()
			if pid == 0 {
				if sig == syscall.SIGWINCH {
					continue // ignored by default, so by us too
				}
				os.Exit(128 + int(sig.(syscall.Signal)))
			}
			_ = syscall.Kill(pid, sig.(syscall.Signal))
		}
	}()
	return s
}

// run starts prog as a child, waits for it and reports its exit code on
// stderr (see the package doc). It does not return.
func (s *supervisor) run(token, prog string, argv, env []string) {
	s.mu.Lock()
	pid, code, msg := forkExecvp(prog, argv, env)
	s.pid = pid
	s.mu.Unlock()
	if pid == 0 {
		_, _ = syscall.Write(2, []byte("spawn-init: "+msg+"\n"))
		report(token, code)
	}
	_ = syscall.Close(0)
	_ = syscall.Close(1)
	for {
		var ws syscall.WaitStatus
		wpid, err := syscall.Wait4(-1, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			report(token, exitNoExec)
		}
		if wpid != pid {
			continue // an orphan re-parented to us: reaped
		}
		switch {
		case ws.Exited():
			report(token, ws.ExitStatus())
		case ws.Signaled():
			report(token, 128+int(ws.Signal()))
		}
	}
}

// report writes the exit record and exits with code.
func report(token string, code int) {
	_, _ = syscall.Write(2, []byte("\x00SPAWN-EXIT "+token+" "+strconv.Itoa(code)+"\n"))
	os.Exit(code)
}

// forkExecvp starts prog like execvp(3) would run it, as a child sharing
// our stdio. On failure pid is 0 and code/msg say why.
func forkExecvp(prog string, argv, env []string) (pid, code int, msg string) {
	attr := &syscall.ProcAttr{Env: env, Files: []uintptr{0, 1, 2}}
	return runvp(prog, env, func(file string) (int, error) {
		return syscall.ForkExec(file, argv, attr)
	})
}

// execvp execs prog with argv and env and only returns on failure, with the
// exit code and message to report.
func execvp(prog string, argv, env []string) (int, string) {
	_, code, msg := runvp(prog, env, func(file string) (int, error) {
		return 0, syscall.Exec(file, argv, env)
	})
	return code, msg
}

// runvp resolves prog like execvp(3) — a prog with '/' as is, else each
// PATH entry in turn, skipping candidates that are missing or not
// executable — and calls run on each candidate until one starts. On
// failure pid is 0 and code and msg say why.
func runvp(prog string, env []string, run func(file string) (int, error)) (pid, code int, msg string) {
	if strings.IndexByte(prog, '/') >= 0 {
		pid, err := run(prog)
		switch err {
		case nil:
			return pid, 0, ""
		case syscall.ENOENT:
			return 0, exitNotFound, prog + ": " + err.Error()
		default:
			return 0, exitNoExec, prog + ": " + err.Error()
		}
	}
	path, ok := getenv(env, "PATH")
	if !ok {
		path = defaultPath
	}
	denied := false
	for {
		dir, rest, more := strings.Cut(path, ":")
		if dir == "" {
			dir = "." // as in execvp(3) and sh: an empty element is the working directory
		}
		file := dir + "/" + prog
		pid, err := run(file)
		switch err {
		case nil:
			return pid, 0, ""
		case syscall.EACCES:
			denied = true
		case syscall.ENOENT, syscall.ENOTDIR, syscall.ESTALE, syscall.ENODEV, syscall.ETIMEDOUT, syscall.ELOOP, syscall.ENAMETOOLONG:
		default:
			return 0, exitNoExec, file + ": " + err.Error()
		}
		if !more {
			break
		}
		path = rest
	}
	if denied {
		return 0, exitNoExec, prog + ": permission denied"
	}
	return 0, exitNotFound, prog + ": not found in PATH"
}

// getenv returns the value of the first entry for key; Merge leaves one.
func getenv(env []string, key string) (string, bool) {
	for _, e := range env {
		if k, v, ok := strings.Cut(e, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

func fail(code int, msg string) {
	_, _ = syscall.Write(2, []byte("spawn-init: "+msg+"\n"))
	os.Exit(code)
}

// stdin reads fd 0 with plain read(2) calls: no buffering, so nothing past
// what Decode asks for is consumed, and no runtime poller, so the file's
// flags are left as they were for the program.
type stdin struct{}

func (stdin) Read(p []byte) (int, error) {
	for {
		n, err := syscall.Read(0, p)
		switch err {
		case nil:
			if n == 0 && len(p) > 0 {
				return 0, io.EOF
			}
			return n, nil
		case syscall.EINTR:
		case syscall.EAGAIN:
			waitReadable()
		default:
			return 0, err
		}
	}
}

// waitReadable blocks until fd 0 is readable, for a stdin that was handed
// to us in non-blocking mode.
func waitReadable() {
	var fds syscall.FdSet
	fds.Bits[0] = 1 // fd 0
	_, _ = syscall.Select(1, &fds, nil, nil, nil)
}
