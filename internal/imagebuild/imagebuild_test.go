package imagebuild

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func testSpec() Spec {
	return Spec{
		Ref: "localhost/caddy-spawn/imagebuild-test:latest",
		Layers: [][]File{
			{
				{Path: "/bin/tool", Mode: 0o755, Data: []byte("#!/bin/sh\necho tool\n")},
				{Path: "/bin/alias", Link: "tool"},
				{Path: "/tmp", Mode: os.ModeDir | os.ModeSticky | 0o777},
			},
			{
				{Path: "/etc/app/config", Mode: 0o600, Data: []byte("key=value\n")},
				{Path: "/usr/local/bin/suid", Mode: os.ModeSetuid | 0o711, Data: []byte("x")},
			},
		},
		Entrypoint: []string{"/bin/tool"},
		Cmd:        []string{"arg1", "arg2"},
		Env:        []string{"FOO=bar"},
		WorkingDir: "/tmp",
	}
}

// entry is what a test expects of one tar entry.
type entry struct {
	typ  byte
	mode int64
	data string
	link string
}

func readLayer(t *testing.T, l v1.Layer) (map[string]entry, []string) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatalf("opening layer: %v", err)
	}
	defer rc.Close()
	got := map[string]entry{}
	var order []string
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading layer: %v", err)
		}
		if hdr.Uid != 0 || hdr.Gid != 0 {
			t.Errorf("%s: uid/gid = %d/%d, want 0/0", hdr.Name, hdr.Uid, hdr.Gid)
		}
		if hdr.ModTime.Unix() != 0 {
			t.Errorf("%s: mtime = %v, want the Unix epoch", hdr.Name, hdr.ModTime)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reading %s: %v", hdr.Name, err)
		}
		got[hdr.Name] = entry{typ: hdr.Typeflag, mode: hdr.Mode, data: string(data), link: hdr.Linkname}
		order = append(order, hdr.Name)
	}
	return got, order
}

func TestWriteArchiveRoundTrip(t *testing.T) {
	archive := filepath.Join(t.TempDir(), "nested", "dir", "img.tar")
	if err := WriteArchive(archive, testSpec()); err != nil {
		t.Fatalf("WriteArchive: %v", err)
	}
	img, err := tarball.ImageFromPath(archive, nil)
	if err != nil {
		t.Fatalf("ImageFromPath: %v", err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatalf("Layers: %v", err)
	}
	if len(layers) != 2 {
		t.Fatalf("got %d layers, want 2", len(layers))
	}

	wantLayers := []map[string]entry{
		{
			"bin/":      {typ: tar.TypeDir, mode: 0o755},
			"bin/alias": {typ: tar.TypeSymlink, mode: 0o777, link: "tool"},
			"bin/tool":  {typ: tar.TypeReg, mode: 0o755, data: "#!/bin/sh\necho tool\n"},
			"tmp/":      {typ: tar.TypeDir, mode: 0o1777},
		},
		{
			"etc/":               {typ: tar.TypeDir, mode: 0o755},
			"etc/app/":           {typ: tar.TypeDir, mode: 0o755},
			"etc/app/config":     {typ: tar.TypeReg, mode: 0o600, data: "key=value\n"},
			"usr/":               {typ: tar.TypeDir, mode: 0o755},
			"usr/local/":         {typ: tar.TypeDir, mode: 0o755},
			"usr/local/bin/":     {typ: tar.TypeDir, mode: 0o755},
			"usr/local/bin/suid": {typ: tar.TypeReg, mode: 0o4711, data: "x"},
		},
	}
	for i, want := range wantLayers {
		got, order := readLayer(t, layers[i])
		if !slices.IsSorted(order) {
			t.Errorf("layer %d: entries not sorted: %v", i, order)
		}
		if len(got) != len(want) {
			t.Errorf("layer %d: entries %v, want %d entries", i, order, len(want))
		}
		for name, w := range want {
			g, ok := got[name]
			if !ok {
				t.Errorf("layer %d: missing %s", i, name)
				continue
			}
			if g != w {
				t.Errorf("layer %d: %s = %+v, want %+v", i, name, g, w)
			}
		}
	}

	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("ConfigFile: %v", err)
	}
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
		t.Errorf("platform = %s/%s, want linux/%s", cfg.OS, cfg.Architecture, runtime.GOARCH)
	}
	if want := []string{"/bin/tool"}; !slices.Equal(cfg.Config.Entrypoint, want) {
		t.Errorf("Entrypoint = %q, want %q", cfg.Config.Entrypoint, want)
	}
	if want := []string{"arg1", "arg2"}; !slices.Equal(cfg.Config.Cmd, want) {
		t.Errorf("Cmd = %q, want %q", cfg.Config.Cmd, want)
	}
	if want := []string{"FOO=bar", DefaultPath}; !slices.Equal(cfg.Config.Env, want) {
		t.Errorf("Env = %q, want %q", cfg.Config.Env, want)
	}
	if cfg.Config.WorkingDir != "/tmp" {
		t.Errorf("WorkingDir = %q, want /tmp", cfg.Config.WorkingDir)
	}
	if len(cfg.RootFS.DiffIDs) != 2 {
		t.Errorf("RootFS.DiffIDs has %d entries, want 2", len(cfg.RootFS.DiffIDs))
	}
}

func TestWriteArchiveReproducible(t *testing.T) {
	dir := t.TempDir()
	var digests []v1.Hash
	var sums [][32]byte
	for _, name := range []string{"a.tar", "b.tar"} {
		p := filepath.Join(dir, name)
		if err := WriteArchive(p, testSpec()); err != nil {
			t.Fatalf("WriteArchive %s: %v", name, err)
		}
		img, err := tarball.ImageFromPath(p, nil)
		if err != nil {
			t.Fatalf("ImageFromPath %s: %v", name, err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatalf("Digest %s: %v", name, err)
		}
		digests = append(digests, d)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		sums = append(sums, sha256.Sum256(data))
	}
	if digests[0] != digests[1] {
		t.Errorf("image digests differ: %s vs %s", digests[0], digests[1])
	}
	if sums[0] != sums[1] {
		t.Errorf("archive bytes differ")
	}
}

func TestEnvKeepsExplicitPath(t *testing.T) {
	s := testSpec()
	s.Env = []string{"PATH=/custom"}
	img, err := Build(s)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("ConfigFile: %v", err)
	}
	if want := []string{"PATH=/custom"}; !slices.Equal(cfg.Config.Env, want) {
		t.Errorf("Env = %q, want %q", cfg.Config.Env, want)
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name  string
		files []File
	}{
		{name: "relative path", files: []File{{Path: "bin/x", Mode: 0o755}}},
		{name: "duplicate path", files: []File{{Path: "/x", Mode: 0o644}, {Path: "/x/", Mode: 0o644}}},
		{name: "file as parent", files: []File{{Path: "/x", Mode: 0o644}, {Path: "/x/y", Mode: 0o644}}},
		{name: "root", files: []File{{Path: "/", Mode: os.ModeDir | 0o755}}},
		{name: "device", files: []File{{Path: "/dev/null", Mode: os.ModeDevice | 0o666}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Build(Spec{Ref: "localhost/x:latest", Layers: [][]File{tc.files}}); err == nil {
				t.Fatal("Build succeeded, want an error")
			}
		})
	}
}

func TestWriteArchiveBadRef(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.tar")
	if err := WriteArchive(p, Spec{Ref: "Not A Ref"}); err == nil {
		t.Fatal("WriteArchive succeeded, want an error")
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("archive exists after failed write: %v", err)
	}
}

func TestBusybox(t *testing.T) {
	if _, err := os.Stat(BusyboxPath); err != nil {
		t.Skipf("%s not installed (apt-get install busybox-static)", BusyboxPath)
	}
	files, err := Busybox()
	if err != nil {
		t.Fatalf("Busybox: %v", err)
	}
	byPath := map[string]File{}
	for _, f := range files {
		byPath[f.Path] = f
	}
	if f := byPath["/bin/busybox"]; f.Mode != 0o755 || len(f.Data) == 0 {
		t.Errorf("/bin/busybox: mode %v, %d bytes", f.Mode, len(f.Data))
	}
	for _, a := range []string{"sh", "cat", "env", "true", "false"} {
		if f := byPath["/bin/"+a]; f.Link != "busybox" {
			t.Errorf("/bin/%s links to %q, want busybox", a, f.Link)
		}
	}
	if f := byPath["/etc/passwd"]; !bytes.Contains(f.Data, []byte("nobody:x:65534:65534:")) {
		t.Errorf("/etc/passwd lacks nobody: %q", f.Data)
	}
	if _, err := Build(Spec{Ref: "localhost/bb:latest", Layers: [][]File{files}}); err != nil {
		t.Errorf("Build with busybox files: %v", err)
	}
}

func TestIsStatic(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := isStatic(data); err != nil {
		t.Errorf("isStatic(test binary): %v", err)
	}
	if _, err := isStatic([]byte("not elf")); err == nil {
		t.Error("isStatic(garbage) succeeded, want an error")
	}
}

func TestGoBinary(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/hello\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := "package main\n\nfunc main() { println(\"hi\") }\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	first, err := GoBinary(dir)
	if err != nil {
		t.Fatalf("GoBinary: %v", err)
	}
	static, err := isStatic(first)
	if err != nil || !static {
		t.Errorf("isStatic = %v, %v; want a static binary", static, err)
	}
	second, err := GoBinary(dir)
	if err != nil {
		t.Fatalf("GoBinary again: %v", err)
	}
	if !bytes.Equal(first, second) {
		t.Error("two builds of the same package differ")
	}

	if _, err := GoBinary(t.TempDir()); err == nil {
		t.Error("GoBinary of an empty directory succeeded, want an error")
	}
}
