//go:build ignore

// gen builds cmd/spawn-init reproducibly, one static binary per
// architecture, and records the Go toolchain that built them.
//
//	go run gen.go [-out dir] [-arch amd64[,arm64]]
//
// It writes <out>/spawn-init-<arch> and <out>/spawn-init.goversion. `go
// generate` runs it with -out "." to refresh the committed files;
// initbin_test.go runs it into a temporary directory, under the recorded
// toolchain, to check that they are up to date.
//
// Every environment variable that changes the output is pinned here, so a
// developer's own settings (GOAMD64, GOFLAGS, a git checkout's VCS state)
// can't leak into the binary: equal toolchain and sources give equal bytes.
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

// archEnv pins the per-architecture instruction-set level to the baseline.
var archEnv = map[string]string{
	"amd64": "GOAMD64=v1",
	"arm64": "GOARM64=v8.0",
}

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
	env := append(os.Environ(),
		"CGO_ENABLED=0",
		"GOOS=linux",
		"GOFLAGS=-buildvcs=false",
		"GOFIPS140=off",
	)
	goenv, err := output(env, "go", "env", "GOVERSION", "GOEXPERIMENT")
	if err != nil {
		return err
	}
	version, experiment, _ := strings.Cut(goenv, "\n")
	if experiment = strings.TrimSpace(experiment); experiment != "" {
		return fmt.Errorf("GOEXPERIMENT=%s is set; unset it to build spawn-init", experiment)
	}
	if !strings.HasPrefix(version, "go1.") || strings.ContainsAny(version, " +") {
		return fmt.Errorf("toolchain %q is not a Go release; spawn-init must be reproducible by others", version)
	}
	for _, arch := range arches {
		pin, ok := archEnv[arch]
		if !ok {
			return fmt.Errorf("unsupported GOARCH %q", arch)
		}
		file := filepath.Join(out, "spawn-init-"+arch)
		if _, err := output(append(env, "GOARCH="+arch, pin),
			"go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=",
			"-o", file, "../../cmd/spawn-init"); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(out, "spawn-init.goversion"), []byte(version+"\n"), 0o644)
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
