// Package initbin embeds the spawn-init binary (cmd/spawn-init) and installs
// it on the host, from where it is bind-mounted read-only into every
// container as /.spawn/init.
//
// The init is one C file without a C library (cmd/spawn-init/spawn-init.c:
// a static executable of a few KiB that starts in microseconds and has no
// runtime threads to freeze and thaw). The binaries are built by `go
// generate ./spawner/initbin` and committed, because people who build
// Caddy with xcaddy compile this module as a dependency and run none of
// our build steps, and need no C compiler. The build is reproducible
// (freestanding, stripped, no build ID or compiler ident) and the
// compilers are recorded in spawn-init.ccversion; initbin_test.go rebuilds
// every architecture and fails if the committed bytes are stale, and runs
// the embedded binary through the init's behaviour (init_test.go; the
// arm64 one under qemu-user, qemu_test.go). This is the approach
// cilium/ebpf's bpf2go takes with its generated objects.
//
// Containers run the host's architecture, so the binary embedded is the one
// for the GOOS/GOARCH Caddy is built for: spawn-init-amd64 on linux/amd64,
// spawn-init-arm64 on linux/arm64, each selected by the name of the file
// holding its go:embed (initbin_linux_<arch>.go). Elsewhere nothing is
// embedded (initbin_other.go) and Install returns ErrUnsupportedArch. To add
// an architecture, add its system calls and entry point to spawn-init.c,
// its compiler to gen.go's compilers and the go:generate line, and add an
// initbin_linux_<arch>.go.
package initbin

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
)

//go:generate go run gen.go -out . -arch amd64,arm64

// ErrUnsupportedArch is returned by Install when no spawn-init is embedded
// for the system and architecture this program was built for.
var ErrUnsupportedArch = errors.New("no spawn-init embedded for " + runtime.GOOS + "/" + runtime.GOARCH +
	": spawning containers needs linux/amd64 or linux/arm64")

// Binary returns a copy of the embedded spawn-init for this GOOS/GOARCH (a static
// Linux ELF executable), or nil if there is none.
func Binary() []byte {
	if embedded == "" {
		return nil
	}
	return []byte(embedded)
}

// Digest returns the lowercase hex SHA-256 of Binary(), or "" if there is
// no binary.
func Digest() string { return digest() }

var digest = sync.OnceValue(func() string {
	if embedded == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(embedded))
	return hex.EncodeToString(sum[:])
})

// Install writes the embedded spawn-init to dir (created if missing) as
// spawn-init-<first 12 hex digits of Digest()>, mode 0555, and returns its
// absolute path. The name changes with the content, so a file in use by
// running containers is never rewritten. A file already there with the
// same content and mode is kept; anything else is replaced atomically
// (temporary file, then rename), so concurrent installers are safe.
func Install(dir string) (string, error) {
	if embedded == "" {
		return "", ErrUnsupportedArch
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("resolving spawn-init directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, "spawn-init-"+Digest()[:12])
	if installed(path) {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating spawn-init directory %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, ".spawn-init-*.tmp")
	if err != nil {
		return "", fmt.Errorf("installing spawn-init in %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	_, err = tmp.WriteString(embedded)
	if err == nil {
		err = tmp.Chmod(0o555)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return "", fmt.Errorf("installing spawn-init as %s: %w", path, err)
	}
	return path, nil
}

// installed reports whether path is a regular file with mode 0555 and the
// embedded content.
func installed(path string) bool {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o555 || fi.Size() != int64(len(embedded)) {
		return false
	}
	b, err := os.ReadFile(path)
	return err == nil && string(b) == embedded
}
