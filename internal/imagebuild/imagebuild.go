// Package imagebuild builds small container images from files in memory and
// writes them as docker-archive tarballs, which containerd's importer accepts.
//
// It exists because no registry is reachable where caddy-spawn is developed and
// tested: the example and test images are built from source in the repository
// (static Go binaries, busybox from Debian's busybox-static). Layers are plain
// tar streams written with archive/tar (uid/gid 0, fixed mtime, sorted
// entries), and everything else — layer digests, the config, the manifest and
// the archive layout — comes from go-containerregistry, so the same Spec always
// yields the same image digest.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// DefaultPath is the PATH put into an image's environment when its Spec
// does not set one.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// BusyboxPath is where Debian's busybox-static package installs its binary.
const BusyboxPath = "/bin/busybox"

// epoch is the modification time of every layer entry and the image's
// creation time, so builds are reproducible.
var epoch = time.Unix(0, 0).UTC()

// File is one entry of an image layer.
//
// Mode carries the permission bits plus the type and special bits of
// os.FileMode: os.ModeDir makes a directory (Data is ignored), os.ModeSticky,
// os.ModeSetuid and os.ModeSetgid map to the tar mode bits 01000, 04000 and
// 02000. A non-empty Link makes a symlink to Link and ignores Mode and Data.
type File struct {
	// Path is absolute inside the image, e.g. "/bin/sh".
	Path string
	// Mode is the file mode, e.g. 0o755 or os.ModeDir|os.ModeSticky|0o777.
	Mode os.FileMode
	// Data is the content of a regular file.
	Data []byte
	// Link is the symlink target if non-empty.
	Link string
}

// Spec describes an image to build.
type Spec struct {
	// Ref names the image in the archive, e.g. "localhost/caddy-spawn/hello:latest".
	Ref string
	// Layers holds one []File per layer, lowest first.
	Layers [][]File
	// Entrypoint and Cmd become the image config's Entrypoint and Cmd.
	Entrypoint, Cmd []string
	// Env is a list of KEY=VALUE; DefaultPath is added when it has no PATH.
	Env []string
	// WorkingDir is the image's working directory; empty means "/".
	WorkingDir string
}

// Build assembles the image described by s, for linux/runtime.GOARCH.
func Build(s Spec) (v1.Image, error) {
	adds := make([]mutate.Addendum, 0, len(s.Layers))
	for i, files := range s.Layers {
		data, err := layerTar(files)
		if err != nil {
			return nil, fmt.Errorf("writing layer %d of %s: %w", i, s.Ref, err)
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		}, tarball.WithCompressedCaching)
		if err != nil {
			return nil, fmt.Errorf("creating layer %d of %s: %w", i, s.Ref, err)
		}
		adds = append(adds, mutate.Addendum{
			Layer: l,
			History: v1.History{
				Created:   v1.Time{Time: epoch},
				CreatedBy: fmt.Sprintf("caddy-spawn imagebuild: layer %d", i),
			},
		})
	}

	img, err := mutate.Append(empty.Image, adds...)
	if err != nil {
		return nil, fmt.Errorf("appending layers to %s: %w", s.Ref, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading config of %s: %w", s.Ref, err)
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture = runtime.GOARCH
	cfg.OS = "linux"
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.Entrypoint = s.Entrypoint
	cfg.Config.Cmd = s.Cmd
	cfg.Config.Env = withDefaultPath(s.Env)
	cfg.Config.WorkingDir = s.WorkingDir
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("setting config of %s: %w", s.Ref, err)
	}
	return img, nil
}

// WriteArchive builds s and writes it to path as a docker-archive tarball
// tagged s.Ref. Parent directories are created, and the file is replaced
// atomically (temporary file in the same directory, then rename).
func WriteArchive(path string, s Spec) error {
	tag, err := name.NewTag(s.Ref)
	if err != nil {
		return fmt.Errorf("parsing image reference %q: %w", s.Ref, err)
	}
	img, err := Build(s)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating directory %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("creating temporary file for %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // no-op after a successful rename
	if err := tarball.Write(tag, img, f); err != nil {
		f.Close()
		return fmt.Errorf("writing archive %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("setting mode of %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("renaming archive to %s: %w", path, err)
	}
	return nil
}

// GoBinary builds the Go main package in pkgDir as a static, stripped,
// reproducible linux binary for runtime.GOARCH and returns its bytes. It runs
// `go` from PATH with the caller's environment (GOFLAGS, GOCACHE, ...).
func GoBinary(pkgDir string) ([]byte, error) {
	tmp, err := os.MkdirTemp("", "imagebuild-go-*")
	if err != nil {
		return nil, fmt.Errorf("creating temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "main")

	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w -buildid=", "-o", out, ".")
	cmd.Dir = pkgDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("building go package in %s: %w\n%s", pkgDir, err, bytes.TrimSpace(stderr.Bytes()))
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("reading binary built from %s: %w", pkgDir, err)
	}
	return data, nil
}

// busyboxApplets are the commands linked to busybox in /bin.
var busyboxApplets = []string{
	"sh", "cat", "echo", "sleep", "env", "printf", "head", "tr", "wc", "date",
	"hostname", "ls", "touch", "test", "dd", "id", "yes", "true", "false",
	"sort",
}

// Busybox returns the files of a minimal busybox userland: the static
// /bin/busybox of the host (Debian's busybox-static), /bin symlinks for common
// applets, a sticky /tmp and an /etc/passwd and /etc/group with root and nobody.
func Busybox() ([]File, error) {
	data, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("reading %s (apt-get install busybox-static): %w", BusyboxPath, err)
	}
	static, err := isStatic(data)
	if err != nil {
		return nil, fmt.Errorf("inspecting %s (apt-get install busybox-static): %w", BusyboxPath, err)
	}
	if !static {
		return nil, fmt.Errorf("%s is dynamically linked: apt-get install busybox-static", BusyboxPath)
	}

	files := []File{
		{Path: "/bin/busybox", Mode: 0o755, Data: data},
		{Path: "/tmp", Mode: os.ModeDir | os.ModeSticky | 0o777},
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte(
			"root:x:0:0:root:/root:/bin/sh\n" +
				"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{Path: "/etc/group", Mode: 0o644, Data: []byte(
			"root:x:0:\n" +
				"nogroup:x:65534:\n")},
	}
	for _, a := range busyboxApplets {
		files = append(files, File{Path: "/bin/" + a, Link: "busybox"})
	}
	return files, nil
}

// isStatic reports whether the ELF executable in data has no program
// interpreter, i.e. runs without a dynamic loader.
func isStatic(data []byte) (bool, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return false, fmt.Errorf("parsing elf: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

// layerTar returns an uncompressed tar of files, with missing parent
// directories added (0755) and entries sorted by path, so parents come first.
func layerTar(files []File) ([]byte, error) {
	entries := make(map[string]File, len(files))
	for _, f := range files {
		p, err := cleanPath(f.Path)
		if err != nil {
			return nil, err
		}
		if _, dup := entries[p]; dup {
			return nil, fmt.Errorf("adding %s: duplicate path", f.Path)
		}
		entries[p] = f
	}
	for p := range entries {
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			if f, ok := entries[dir]; ok {
				if !f.Mode.IsDir() || f.Link != "" {
					return nil, fmt.Errorf("adding %s: parent %s is not a directory", p, dir)
				}
				continue
			}
			entries[dir] = File{Path: "/" + dir, Mode: os.ModeDir | 0o755}
		}
	}
	paths := make([]string, 0, len(entries))
	for p := range entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		f := entries[p]
		hdr := &tar.Header{
			Name:    p,
			Mode:    tarMode(f.Mode),
			ModTime: epoch,
		}
		switch {
		case f.Link != "":
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = f.Link
			hdr.Mode = 0o777
		case f.Mode.IsDir():
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		case f.Mode.IsRegular():
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(f.Data))
		default:
			return nil, fmt.Errorf("adding %s: unsupported file mode %v", f.Path, f.Mode)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("writing tar header for %s: %w", f.Path, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, fmt.Errorf("writing tar data for %s: %w", f.Path, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing tar: %w", err)
	}
	return buf.Bytes(), nil
}

// cleanPath turns an absolute image path into a tar entry name without the
// leading slash.
func cleanPath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("adding %q: path must be absolute", p)
	}
	c := strings.TrimPrefix(path.Clean(p), "/")
	if c == "" {
		return "", errors.New("adding \"/\": the root directory is implicit")
	}
	return c, nil
}

// tarMode converts the permission and special bits of m to a tar header mode.
func tarMode(m os.FileMode) int64 {
	mode := int64(m.Perm())
	if m&os.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// withDefaultPath returns env with DefaultPath appended when it has no PATH.
func withDefaultPath(env []string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			return env
		}
	}
	return append(append([]string(nil), env...), DefaultPath)
}
