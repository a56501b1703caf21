//go:build vm

package vm

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// initramfs is the guest's whole root filesystem, written as a newc cpio
// archive (the format the kernel unpacks, Documentation/driver-api/
// early-userspace/buffer-format.rst). Entries are keyed by guest path.
type initramfs struct {
	entries map[string]entry
}

// entry is one file, directory or symlink of the guest.
type entry struct {
	mode   uint32 // type and permission bits, as in stat(2)
	source string // a host file to copy (regular files)
	data   []byte // or the content itself (regular files), or the link target
}

const (
	modeType    = 0o170000
	modeDir     = 0o040000
	modeRegular = 0o100000
	modeSymlink = 0o120000
)

func newInitramfs() *initramfs { return &initramfs{entries: map[string]entry{}} }

// dir adds a directory and its parents.
func (r *initramfs) dir(p string) {
	for p != "/" && p != "." {
		if _, ok := r.entries[p]; !ok {
			r.entries[p] = entry{mode: modeDir | 0o755}
		}
		p = path.Dir(p)
	}
}

// file adds a copy of the host file source at guest path p, executable or
// not as the source is.
func (r *initramfs) file(p, source string) error {
	st, err := os.Stat(source)
	if err != nil {
		return err
	}
	r.dir(path.Dir(p))
	r.entries[p] = entry{mode: modeRegular | uint32(st.Mode().Perm()), source: source}
	return nil
}

// content adds a regular file with the given bytes.
func (r *initramfs) content(p string, perm uint32, data []byte) {
	r.dir(path.Dir(p))
	r.entries[p] = entry{mode: modeRegular | perm, data: data}
}

// symlink adds a symbolic link at p pointing to target.
func (r *initramfs) symlink(p, target string) {
	r.dir(path.Dir(p))
	r.entries[p] = entry{mode: modeSymlink | 0o777, data: []byte(target)}
}

// binary adds the host executable source at guest path p together with
// the shared libraries and loader ldd names for it (none for a static
// binary), at their host paths.
func (r *initramfs) binary(p, source string) error {
	if err := r.file(p, source); err != nil {
		return err
	}
	libs, err := sharedLibraries(source)
	if err != nil {
		return err
	}
	for _, lib := range libs {
		real, err := filepath.EvalSymlinks(lib)
		if err != nil {
			return err
		}
		if err := r.file(real, real); err != nil {
			return err
		}
		if real != lib {
			r.symlink(lib, real)
		}
	}
	return nil
}

// lddPath matches the absolute paths in ldd's output: "libc.so.6 =>
// /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)".
var lddPath = regexp.MustCompile(`(?m)(?:=> |^\s*)(/\S+) \(0x`)

// sharedLibraries lists what the dynamic loader maps for binary.
func sharedLibraries(binary string) ([]string, error) {
	out, err := exec.Command("ldd", binary).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %w: %s", binary, err, out)
	}
	var libs []string
	for _, m := range lddPath.FindAllSubmatch(out, -1) {
		libs = append(libs, string(m[1]))
	}
	return libs, nil
}

// busybox adds the static busybox and a link for each of its applets.
func (r *initramfs) busybox(source string) error {
	if err := r.file("/bin/busybox", source); err != nil {
		return err
	}
	out, err := exec.Command(source, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("busybox --list-full: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if p := "/" + strings.TrimSpace(sc.Text()); p != "/" && p != "/bin/busybox" {
			r.symlink(p, "/bin/busybox")
		}
	}
	return sc.Err()
}

// write writes the archive to w, parents before children.
func (r *initramfs) write(w io.Writer) error {
	names := make([]string, 0, len(r.entries))
	for p := range r.entries {
		names = append(names, p)
	}
	sort.Strings(names)
	bw := bufio.NewWriterSize(w, 1<<20)
	for i, p := range names {
		e := r.entries[p]
		data := e.data
		if e.source != "" {
			b, err := os.ReadFile(e.source)
			if err != nil {
				return err
			}
			data = b
		}
		nlink := 1
		if e.mode&modeType == modeDir {
			nlink = 2
		}
		if err := writeRecord(bw, uint32(i+1), e.mode, nlink, strings.TrimPrefix(p, "/"), data); err != nil {
			return err
		}
	}
	if err := writeRecord(bw, 0, 0, 1, "TRAILER!!!", nil); err != nil {
		return err
	}
	return bw.Flush()
}

// writeRecord writes one newc header, the name and the data, each padded
// to a multiple of four bytes.
func writeRecord(w io.Writer, ino, mode uint32, nlink int, name string, data []byte) error {
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize (with its NUL), check.
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	var b bytes.Buffer
	b.WriteString(hdr)
	b.WriteString(name)
	b.WriteByte(0)
	pad(&b, b.Len())
	if _, err := w.Write(b.Bytes()); err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	b.Reset()
	pad(&b, len(data))
	_, err := w.Write(b.Bytes())
	return err
}

func pad(b *bytes.Buffer, n int) {
	for ; n%4 != 0; n++ {
		b.WriteByte(0)
	}
}
