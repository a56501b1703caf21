package spawner

import "syscall"

// daemonProcAttr puts containerd in its own process group, so a signal to
// ours does not reach it, and has the kernel SIGKILL it when we die, so no
// daemon outlives us.
func daemonProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
