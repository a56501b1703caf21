package spawner

import "syscall"

// childProcAttr puts a supervised child (containerd, the task server) in its
// own process group, so a signal to ours does not reach it, and has the
// kernel SIGKILL it when we die, so none outlives us.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
