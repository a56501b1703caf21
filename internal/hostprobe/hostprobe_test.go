package hostprobe

import (
	"os"
	"os/exec"
	"slices"
	"testing"
)

func TestProcesses(t *testing.T) {
	marker := "hostprobe-test-marker-" + t.Name()
	// The shell waits in its builtin read: no child that could briefly
	// carry the same command line.
	cmd := exec.Command("/bin/sh", "-c", "read x", marker)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	got := Processes(marker)
	if len(got) != 1 || got[0].PID != cmd.Process.Pid || !slices.Contains(got[0].Args, marker) {
		t.Fatalf("Processes(%q) = %v, want the one sh started (pid %d)", marker, got, cmd.Process.Pid)
	}
	if p := Processes("no-such-process-" + marker + "-x"); len(p) != 0 {
		t.Errorf("unexpected match: %v", p)
	}
}

func TestMountsUnder(t *testing.T) {
	// /proc is mounted on every Linux host this runs on.
	if got := MountsUnder("/proc"); !slices.Contains(got, "/proc") {
		t.Errorf("MountsUnder(/proc) = %v, want /proc among them", got)
	}
	dir := t.TempDir()
	if got := MountsUnder(dir); len(got) != 0 {
		t.Errorf("MountsUnder(%s) = %v, want none", dir, got)
	}
	_ = os.Remove(dir)
}
