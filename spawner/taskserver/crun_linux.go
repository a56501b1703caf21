package taskserver

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// crun runs the crun binary. Every call is one short exec of a C program;
// there is no long-lived runtime process per container.
type crun struct {
	binary string
	root   string // crun's --root: its state, on tmpfs
	reaper *reaper
}

// run executes crun with args and stdio (nil entries are /dev/null), and
// waits for it. logPath receives crun's own messages; on failure its
// last lines are the error.
func (c *crun) run(ctx context.Context, logPath string, stdio [3]*os.File, args ...string) error {
	argv := append([]string{c.binary, "--root", c.root, "--log", "file:" + logPath}, args...)
	var null *os.File
	for i := range stdio {
		if stdio[i] == nil {
			if null == nil {
				f, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
				if err != nil {
					return err
				}
				null = f
				defer null.Close()
			}
			stdio[i] = null
		}
	}
	pid, exited, err := c.reaper.start(c.binary, argv, &os.ProcAttr{
		Dir:   "/",
		Files: stdio[:],
		Env:   []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
	})
	if err != nil {
		return fmt.Errorf("starting crun %s: %w", args[0], err)
	}
	select {
	case ws := <-exited:
		if ws.Exited() && ws.ExitStatus() == 0 {
			return nil
		}
		return fmt.Errorf("crun %s: %s: %s", args[0], describe(ws), lastLines(logPath))
	case <-ctx.Done():
		_ = unix.Kill(pid, unix.SIGKILL)
		return fmt.Errorf("crun %s: %w", args[0], ctx.Err())
	}
}

func describe(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return "exit status " + strconv.Itoa(ws.ExitStatus())
}

// lastLines is the end of crun's log: its error message.
func lastLines(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return "no message"
	}
	b = bytes.TrimSpace(b)
	if len(b) > 512 {
		b = b[len(b)-512:]
	}
	return strings.ReplaceAll(string(b), "\n", "; ")
}

// create runs `crun create`: the container's init is forked with stdio as
// its standard streams and waits in crun's exec FIFO until start.
func (c *crun) create(ctx context.Context, id, bundle string, stdio [3]*os.File) (int, error) {
	pidFile := filepath.Join(bundle, "init.pid")
	if err := c.run(ctx, filepath.Join(bundle, "crun.log"), stdio,
		"create", "--bundle", bundle, "--pid-file", pidFile, "--no-new-keyring", id); err != nil {
		return 0, err
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("reading pid of %s: %w", id, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("bad pid file of %s: %q", id, b)
	}
	return pid, nil
}

// start releases a created container's init from crun's exec FIFO, the way
// `crun start` does, without starting a process: opening the FIFO for
// writing and writing one byte lets the init's blocking read return and
// exec the program.
func (c *crun) start(ctx context.Context, id, bundle string, hooks bool) error {
	// OCI hooks (poststart) need crun; and the FIFO's layout is crun's:
	// crun itself starts the container when it is not what we expect.
	crunStart := func() error {
		return c.run(ctx, filepath.Join(bundle, "crun.log"), [3]*os.File{}, "start", id)
	}
	if hooks {
		return crunStart()
	}
	fifo := filepath.Join(c.root, id, "exec.fifo")
	f, err := os.OpenFile(fifo, os.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return crunStart()
	}
	defer f.Close()
	// crun tells "created" from "running" by the FIFO's presence.
	_ = os.Remove(fifo)
	if _, err := f.Write([]byte{0}); err != nil {
		return fmt.Errorf("starting %s: %w", id, err)
	}
	return nil
}

// delete removes crun's state and the container's cgroup.
func (c *crun) delete(ctx context.Context, id, bundle string) error {
	return c.run(ctx, filepath.Join(bundle, "crun.log"), [3]*os.File{}, "delete", "--force", id)
}
