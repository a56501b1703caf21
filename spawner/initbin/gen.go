//go:build ignore

// gen builds cmd/spawn-init/spawn-init.c reproducibly, one static binary
// per architecture, and records the C compilers that built them.
//
//	go run gen.go [-out dir] [-arch amd64[,arm64]]
//
// It writes <out>/spawn-init-<arch> and <out>/spawn-init.ccversion (each
// compiler's `--version` line). `go generate` runs it with -out "." to
// refresh the committed files; initbin_test.go runs it into a temporary
// directory to check that they are up to date.
//
// The compilers are Debian's GCC for each target, by their target-prefixed
// names (packages gcc-x86-64-linux-gnu and gcc-aarch64-linux-gnu; `make
// deps` installs them), so the same command works on either host. The
// init links no C library: there is no libc, loader or start-up code in
// the output, nothing but the one source file, and with no build ID,
// compiler ident or symbols, equal compilers and source give equal bytes.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// compilers are the C compilers per GOARCH.
var compilers = map[string]string{
	"amd64": "x86_64-linux-gnu-gcc",
	"arm64": "aarch64-linux-gnu-gcc",
}

// cflags build a freestanding static executable without anything that
// varies between builds.
var cflags = []string{
	"-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror",
	"-ffreestanding", "-fno-builtin", "-fno-tree-loop-distribute-patterns",
	"-fno-stack-protector", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
	"-fno-ident", "-fno-pie", "-no-pie",
	"-static", "-nostdlib", "-nostartfiles",
	"-Wl,--build-id=none", "-Wl,-z,noexecstack", "-s",
}

const source = "../../cmd/spawn-init/spawn-init.c"

func main() {
	out := flag.String("out", ".", "output `directory`")
	arches := flag.String("arch", "amd64,arm64", "comma-separated GOARCH `list`")
	flag.Parse()
	if err := run(*out, strings.Split(*arches, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(out string, arches []string) error {
	// The C locale, so that messages and --version are the same for all.
	env := append(os.Environ(), "LC_ALL=C", "SOURCE_DATE_EPOCH=0")
	var versions strings.Builder
	for _, arch := range arches {
		cc, ok := compilers[arch]
		if !ok {
			return fmt.Errorf("unsupported GOARCH %q", arch)
		}
		if _, err := exec.LookPath(cc); err != nil {
			return fmt.Errorf("%s (the C compiler for %s) is not installed: run make deps: %w", cc, arch, err)
		}
		v, err := output(env, cc, "--version")
		if err != nil {
			return err
		}
		first, _, _ := strings.Cut(v, "\n")
		fmt.Fprintf(&versions, "%s: %s\n", arch, first)
		file := filepath.Join(out, "spawn-init-"+arch)
		args := append(append([]string{}, cflags...), "-o", file, source)
		if _, err := output(env, cc, args...); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(out, "spawn-init.ccversion"), []byte(versions.String()), 0o644)
}

func output(env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return strings.TrimSpace(string(b)), nil
}
