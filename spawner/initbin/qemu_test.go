//go:build linux

package initbin

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/caddy-spawn/caddy-spawn/internal/initframe"
)

// requireQEMU is the environment variable that turns a missing
// qemu-aarch64-static from a skip into a failure; `make unit` (and so
// `make test`) sets it, after `make deps` installed qemu-user-static.
const requireQEMU = "SPAWN_REQUIRE_QEMU"

// TestARM64InitUnderQEMU runs the committed linux/arm64 spawn-init under
// Debian's qemu-user-static, the same way as init_test.go runs the host's
// binary: it feeds the init a request frame and checks the program
// it starts (a host /bin/sh: qemu-user hands execve to the host kernel),
// the environment that program sees, the body left on its stdin, and the
// init's ready and exit records.
func TestARM64InitUnderQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		if os.Getenv(requireQEMU) == "1" {
			t.Fatalf("qemu-aarch64-static not found and %s=1: install qemu-user-static (make deps)", requireQEMU)
		}
		t.Skipf("qemu-aarch64-static not found (install qemu-user-static, or set %s=1 to fail instead)", requireQEMU)
	}
	const token = "00112233445566778899aabbccddeeff"
	frame := func(env ...string) []byte {
		b, err := initframe.Encode(env)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name       string
		args       []string
		env        []string
		stdin      []byte
		wantCode   int
		wantStdout string
		wantStderr string // after the ready record
	}{
		{
			name:       "exec with merged environment",
			args:       []string{"/bin/sh", "-c", `echo "$FOO $BAR"; cat`},
			env:        []string{"BAR=base", "FOO=base"},
			stdin:      append(frame("FOO=frame"), "body-bytes"...),
			wantStdout: "frame base\nbody-bytes",
		},
		{
			name:       "PATH lookup",
			args:       []string{"sh", "-c", `echo "$0"`},
			env:        []string{"PATH=/nonexistent:/usr/bin:/bin"},
			stdin:      frame(),
			wantStdout: "sh\n",
		},
		{
			name:       "supervisor reports the exit code",
			args:       []string{"/bin/sh", "-c", `echo "out $SPAWN_EXIT_TOKEN."; echo err >&2; cat; exit 3`},
			stdin:      append(frame("SPAWN_EXIT_TOKEN="+token), "body"...),
			wantCode:   3,
			wantStdout: "out .\nbody",
			wantStderr: "err\n" + fmt.Sprintf("\x00SPAWN-EXIT %s %d\n", token, 3),
		},
		{
			name:       "malformed frame",
			args:       []string{"/bin/sh", "-c", "true"},
			stdin:      []byte("GET / HTTP/1.1\r\n\r\n"),
			wantCode:   125,
			wantStderr: "spawn-init: reading request frame: initframe: bad magic: got \"GET \"\n",
		},
		{
			name:       "missing program",
			args:       []string{"/nonexistent/prog"},
			stdin:      frame(),
			wantCode:   127,
			wantStderr: "spawn-init: /nonexistent/prog: no such file or directory\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runInit(t, append([]string{qemu, "spawn-init-arm64"}, tc.args...), tc.env, tc.stdin)
			if code != tc.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tc.wantCode, stderr)
			}
			if stdout != tc.wantStdout {
				t.Errorf("stdout = %q, want %q", stdout, tc.wantStdout)
			}
			gotStderr, ok := strings.CutPrefix(stderr, readyRecord)
			if !ok {
				t.Errorf("stderr %q does not start with the ready record", stderr)
			}
			if gotStderr != tc.wantStderr {
				t.Errorf("stderr = %q, want %q", gotStderr, tc.wantStderr)
			}
		})
	}
}
