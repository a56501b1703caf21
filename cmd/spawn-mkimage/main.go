// Command spawn-mkimage builds the images that caddy-spawn's examples and
// tests run, from source in this repository, as docker-archive tarballs that
// `ctr images import` and the snapshots package can import:
//
//	spawn-mkimage -out DIR
//
// writes DIR/hello.tar, DIR/shell.tar and DIR/testfn.tar and prints one line
// per image: reference, digest, size in bytes and path. Go programs are built
// static (CGO_ENABLED=0) and busybox comes from Debian's busybox-static, so
// no registry is needed. It must run somewhere inside the repository.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/caddy-spawn/caddy-spawn/internal/imagebuild"
)

// modulePath identifies the repository root: the go.mod declaring it.
const modulePath = "github.com/caddy-spawn/caddy-spawn"

func main() {
	out := flag.String("out", "", "directory to write the image archives to (required)")
	flag.Parse()
	if *out == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: spawn-mkimage -out DIR")
		os.Exit(2)
	}
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "spawn-mkimage:", err)
		os.Exit(1)
	}
}

// image is one archive to write.
type image struct {
	file string
	spec imagebuild.Spec
}

func run(out string) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}

	// The Go builds are the slow part; run them in parallel.
	programs := []string{"examples/functions/hello", "testdata/functions/testfn"}
	bins := make([][]byte, len(programs))
	errs := make([]error, len(programs)+1) // the last one is busybox's
	var wg sync.WaitGroup
	for i, p := range programs {
		wg.Go(func() {
			bins[i], errs[i] = imagebuild.GoBinary(filepath.Join(root, p))
		})
	}
	busybox, err := imagebuild.Busybox()
	errs[len(programs)] = err
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	hello, testfn := bins[0], bins[1]

	scripts, err := scriptFiles(filepath.Join(root, "examples/functions/shell"), "/fn")
	if err != nil {
		return err
	}

	images := []image{
		{file: "hello.tar", spec: imagebuild.Spec{
			Ref:        "localhost/caddy-spawn/hello:latest",
			Layers:     [][]imagebuild.File{{{Path: "/hello", Mode: 0o755, Data: hello}}},
			Entrypoint: []string{"/hello"},
		}},
		{file: "shell.tar", spec: imagebuild.Spec{
			Ref:        "localhost/caddy-spawn/shell:latest",
			Layers:     [][]imagebuild.File{busybox, scripts},
			Entrypoint: []string{"/bin/sh"},
			Cmd:        []string{"/fn/stream.sh"},
		}},
		{file: "testfn.tar", spec: imagebuild.Spec{
			Ref: "localhost/caddy-spawn/testfn:latest",
			Layers: [][]imagebuild.File{
				busybox,
				{{Path: "/testfn", Mode: 0o755, Data: testfn}},
			},
			Entrypoint: []string{"/testfn"},
			Cmd:        []string{"env"},
			Env:        []string{"FN_IMAGE_ENV=from-image"},
		}},
	}
	for _, img := range images {
		if err := write(filepath.Join(out, img.file), img.spec); err != nil {
			return err
		}
	}
	return nil
}

// write builds spec into path and prints its summary line.
func write(path string, spec imagebuild.Spec) error {
	if err := imagebuild.WriteArchive(path, spec); err != nil {
		return err
	}
	// Reading the archive back both checks it and gives the digest without
	// compressing the layers a second time.
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		return fmt.Errorf("reading back archive %s: %w", path, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("computing digest of %s: %w", spec.Ref, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("checking archive %s: %w", path, err)
	}
	fmt.Printf("%s\t%s\t%d\t%s\n", spec.Ref, digest, fi.Size(), path)
	return nil
}

// scriptFiles returns the regular files in dir as executables under prefix.
func scriptFiles(dir, prefix string) ([]imagebuild.File, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading scripts in %s: %w", dir, err)
	}
	var files []imagebuild.File
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("reading script %s: %w", e.Name(), err)
		}
		files = append(files, imagebuild.File{Path: prefix + "/" + e.Name(), Mode: 0o755, Data: data})
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("reading scripts in %s: no files", dir)
	}
	return files, nil
}

// repoRoot walks up from the working directory to the directory whose go.mod
// declares modulePath.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("getting working directory: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		ok, err := declaresModule(filepath.Join(dir, "go.mod"))
		if err != nil {
			return "", err
		}
		if ok {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("finding repository root: no go.mod for %s above %s", modulePath, wd)
		}
	}
}

// declaresModule reports whether the go.mod at path exists and has the
// module line for modulePath.
func declaresModule(path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 2 && fields[0] == "module" {
			return strings.Trim(fields[1], `"`) == modulePath, nil
		}
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	return false, nil
}
