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
// It must stay tiny: it is paused in every pooled container. Standard
// library and initframe only, no goroutines, no fmt, and os only for Args.
package main

import (
	"io"
	"os"
	"strings"
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
	frame, err := initframe.Decode(stdin{})
	if err != nil {
		fail(exitFrame, "reading request frame: "+err.Error())
	}
	env := initframe.Merge(syscall.Environ(), frame)
	code, msg := execvp(os.Args[1], os.Args[1:], env)
	fail(code, msg)
}

// execvp execs prog with argv and env and only returns on failure, with the
// exit code and message to report. Like execvp(3), a prog without '/' is
// looked up in PATH, skipping candidates that are missing or not executable.
func execvp(prog string, argv, env []string) (int, string) {
	if strings.IndexByte(prog, '/') >= 0 {
		err := syscall.Exec(prog, argv, env)
		if err == syscall.ENOENT {
			return exitNotFound, prog + ": " + err.Error()
		}
		return exitNoExec, prog + ": " + err.Error()
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
		switch err := syscall.Exec(file, argv, env); err {
		case syscall.EACCES:
			denied = true
		case syscall.ENOENT, syscall.ENOTDIR, syscall.ESTALE, syscall.ENODEV, syscall.ETIMEDOUT, syscall.ELOOP, syscall.ENAMETOOLONG:
		default:
			return exitNoExec, file + ": " + err.Error()
		}
		if !more {
			break
		}
		path = rest
	}
	if denied {
		return exitNoExec, prog + ": permission denied"
	}
	return exitNotFound, prog + ": not found in PATH"
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
