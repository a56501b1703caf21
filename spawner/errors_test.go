package spawner

import (
	"context"
	"errors"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// TestNeedsLinux checks what New and StartDaemon answer off Linux (the
// _other.go files only keep the package compiling there): an error that
// says spawning needs Linux, not a panic.
func TestNeedsLinux(t *testing.T) {
	tests := []struct {
		name    string
		goos    string
		wantErr bool
	}{
		{name: "linux", goos: "linux"},
		{name: "darwin", goos: "darwin", wantErr: true},
		{name: "windows", goos: "windows", wantErr: true},
		{name: "freebsd", goos: "freebsd", wantErr: true},
	}
	orig := goos
	t.Cleanup(func() { goos = orig })
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			goos = tc.goos
			err := requireLinux()
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("requireLinux() = %v, want nil", err)
				}
				return
			}
			// New and StartDaemon check the system before anything else:
			// an empty config gets the same answer.
			_, newErr := New(Config{})
			_, daemonErr := StartDaemon(context.Background(), DaemonConfig{}, zap.NewNop())
			for name, err := range map[string]error{"requireLinux": err, "New": newErr, "StartDaemon": daemonErr} {
				if !errors.Is(err, ErrNeedsLinux) {
					t.Errorf("%s error = %v, want ErrNeedsLinux", name, err)
					continue
				}
				if msg := err.Error(); !strings.Contains(msg, "spawning containers needs Linux") || !strings.Contains(msg, tc.goos) {
					t.Errorf("%s error = %q, want it to say spawning needs Linux and name %s", name, msg, tc.goos)
				}
			}
		})
	}
}
