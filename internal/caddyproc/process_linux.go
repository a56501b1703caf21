package caddyproc

import (
	"os"
	"syscall"
)

// terminate is the signal Stop sends first.
var terminate os.Signal = syscall.SIGTERM

// sysProcAttr puts Caddy in its own process group, and kills it when the
// thread that started it (this test or bench process) dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killGroup kills the process group p leads (Caddy and anything it started
// that did not move out, such as its managed containerd).
func killGroup(p *os.Process) {
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
}
