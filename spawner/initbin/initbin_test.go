package initbin

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// committed are the generated binaries, one per architecture, with the
// ELF machine each must be built for. They are checked on every GOOS and
// GOARCH, including the ones that embed nothing.
var committed = []struct {
	arch    string
	file    string
	machine elf.Machine
}{
	{arch: "amd64", file: "spawn-init-amd64", machine: elf.EM_X86_64},
	{arch: "arm64", file: "spawn-init-arm64", machine: elf.EM_AARCH64},
}

func TestBinaryIsStaticELF(t *testing.T) {
	for _, tc := range committed {
		t.Run(tc.arch, func(t *testing.T) {
			b, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			f, err := elf.NewFile(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("%s is not an ELF file: %v", tc.file, err)
			}
			if f.Class != elf.ELFCLASS64 || f.Machine != tc.machine || f.Type != elf.ET_EXEC {
				t.Errorf("%s: class %v, machine %v, type %v; want ELFCLASS64, %v, ET_EXEC", tc.file, f.Class, f.Machine, f.Type, tc.machine)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
					t.Errorf("%s has a %v program header; want a static binary", tc.file, p.Type)
				}
			}
			if runtime.GOOS == "linux" && runtime.GOARCH == tc.arch {
				if !bytes.Equal(Binary(), b) {
					t.Error("Binary() differs from " + tc.file)
				}
				sum := sha256.Sum256(b)
				if got, want := Digest(), hex.EncodeToString(sum[:]); got != want {
					t.Errorf("Digest() = %s, want %s", got, want)
				}
			}
		})
	}
}

// TestEmbedSelection checks which binary a build for each GOOS/GOARCH
// embeds, as the go command selects files by their names: a linux/arm64
// Caddy must carry the arm64 init, and a darwin one none.
func TestEmbedSelection(t *testing.T) {
	tests := []struct {
		goos, goarch string
		want         string // the embedded file, "" for none
	}{
		{goos: "linux", goarch: "amd64", want: "spawn-init-amd64"},
		{goos: "linux", goarch: "arm64", want: "spawn-init-arm64"},
		{goos: "linux", goarch: "riscv64"},
		{goos: "darwin", goarch: "arm64"},
		{goos: "darwin", goarch: "amd64"},
		{goos: "windows", goarch: "amd64"},
		{goos: "freebsd", goarch: "amd64"},
	}
	for _, tc := range tests {
		t.Run(tc.goos+"/"+tc.goarch, func(t *testing.T) {
			cmd := exec.Command("go", "list", "-f", `{{join .EmbedFiles ","}}`, ".")
			cmd.Env = append(os.Environ(), "GOOS="+tc.goos, "GOARCH="+tc.goarch, "CGO_ENABLED=0")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("go list: %v\n%s", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != tc.want {
				t.Errorf("embedded files = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestBinaryIsFresh rebuilds spawn-init for every architecture with the
// generator and compares the results with the committed binaries. It needs
// the recorded compilers (make deps installs them): with another version
// the bytes could differ for no fault of the source, so that fails with
// its own message.
func TestBinaryIsFresh(t *testing.T) {
	recorded, err := os.ReadFile("spawn-init.ccversion")
	if err != nil {
		t.Fatal(err)
	}
	arches := make([]string, len(committed))
	for i, tc := range committed {
		arches[i] = tc.arch
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "run", "gen.go", "-out", dir, "-arch", strings.Join(arches, ","))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rebuilding spawn-init: %v\n%s", err, out)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "spawn-init.ccversion")); err != nil || !bytes.Equal(got, recorded) {
		t.Fatalf("the C compilers here are\n%s(%v), the committed binaries were built with\n%s: install those (make deps) to check them, or regenerate with go generate ./spawner/initbin",
			got, err, recorded)
	}
	for _, tc := range committed {
		want, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, tc.file))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("embedded %s is stale: run go generate ./spawner/initbin", tc.file)
		}
	}
}

func TestInstall(t *testing.T) {
	if Binary() == nil {
		if _, err := Install(t.TempDir()); !errors.Is(err, ErrUnsupportedArch) {
			t.Fatalf("Install() error = %v, want ErrUnsupportedArch", err)
		}
		return
	}
	name := "spawn-init-" + Digest()[:12]
	tests := []struct {
		name      string
		existing  []byte // content of a file already at the target path
		mode      os.FileMode
		wantReuse bool // the existing file is kept, not replaced
	}{
		{name: "fresh directory"},
		{name: "identical file kept", existing: Binary(), mode: 0o555, wantReuse: true},
		{name: "different content replaced", existing: []byte("truncated"), mode: 0o555},
		{name: "same size different content replaced", existing: make([]byte, len(Binary())), mode: 0o555},
		{name: "wrong mode replaced", existing: Binary(), mode: 0o755},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "not", "yet")
			target := filepath.Join(dir, name)
			var before os.FileInfo
			if tc.existing != nil {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(target, tc.existing, tc.mode); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(target, tc.mode); err != nil { // past the umask
					t.Fatal(err)
				}
				var err error
				if before, err = os.Stat(target); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Install(dir)
			if err != nil {
				t.Fatalf("Install() error = %v", err)
			}
			if got != target {
				t.Fatalf("Install() = %s, want %s", got, target)
			}
			after, err := os.Stat(target)
			if err != nil {
				t.Fatal(err)
			}
			if after.Mode() != 0o555 {
				t.Errorf("mode = %v, want -r-xr-xr-x", after.Mode())
			}
			if reused := before != nil && os.SameFile(before, after); reused != tc.wantReuse {
				t.Errorf("existing file reused = %v, want %v", reused, tc.wantReuse)
			}
			b, err := os.ReadFile(target)
			if err != nil || !bytes.Equal(b, Binary()) {
				t.Fatalf("installed content differs from Binary() (%v)", err)
			}
			entries, err := os.ReadDir(dir)
			if err != nil || len(entries) != 1 {
				t.Fatalf("directory holds %v (%v), want only %s", entries, err, name)
			}
		})
	}
}

func TestInstallRelativeDir(t *testing.T) {
	if Binary() == nil {
		t.Skip("no spawn-init embedded for " + runtime.GOOS + "/" + runtime.GOARCH)
	}
	t.Chdir(t.TempDir())
	got, err := Install("bin")
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if want := filepath.Join(wd, "bin", "spawn-init-"+Digest()[:12]); got != want {
		t.Fatalf("Install() = %s, want %s", got, want)
	}
	// The installed binary runs: with no arguments it prints its usage.
	out, err := exec.Command(got).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 125 || !strings.Contains(string(out), "usage: spawn-init") {
		t.Fatalf("running %s: %v, %q; want exit 125 and usage", got, err, out)
	}
}
