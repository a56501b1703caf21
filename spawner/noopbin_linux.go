package spawner

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
)

// containerd runs the runtime binary of every task once more when the
// task's connection closes ("cleaning up after shim disconnected"), with
// "delete": for a sandbox-attached task that is only a formality, since our
// task server already removed it, and all containerd needs is exit status 0
// (an empty DeleteResponse on stdout is a valid one). Any program that
// exits 0 would do, but /bin/true is dynamically linked against glibc,
// whose start-up probes the CPU's caches with cpuid — a trap to the
// hypervisor in a VM, ~1 ms of CPU per container measured here. So the fast
// path's runtime is this: a static ELF executable of a few bytes of machine
// code that calls exit_group(0), written out at start.

// noopCode is exit_group(0) for each architecture we build for.
var noopCode = map[string]struct {
	machine elf.Machine
	code    []byte
}{
	"amd64": {elf.EM_X86_64, []byte{
		0x31, 0xff, // xor edi, edi
		0xb8, 0xe7, 0x00, 0x00, 0x00, // mov eax, 231 (exit_group)
		0x0f, 0x05, // syscall
	}},
	"arm64": {elf.EM_AARCH64, []byte{
		0x00, 0x00, 0x80, 0xd2, // mov x0, #0
		0xc8, 0x0b, 0x80, 0xd2, // mov x8, #94 (exit_group)
		0x01, 0x00, 0x00, 0xd4, // svc #0
	}},
}

// noopELF is the executable for goarch: an ELF header, one loadable
// segment holding the whole file, and the code after the headers.
func noopELF(goarch string) ([]byte, error) {
	arch, ok := noopCode[goarch]
	if !ok {
		return nil, fmt.Errorf("no exit program for %s", goarch)
	}
	const base = 0x400000
	hdrSize := binary.Size(elf.Header64{}) + binary.Size(elf.Prog64{})
	size := uint64(hdrSize + len(arch.code))
	h := elf.Header64{
		Type: uint16(elf.ET_EXEC), Machine: uint16(arch.machine), Version: uint32(elf.EV_CURRENT),
		Entry: base + uint64(hdrSize), Phoff: uint64(binary.Size(elf.Header64{})),
		Ehsize: uint16(binary.Size(elf.Header64{})), Phentsize: uint16(binary.Size(elf.Prog64{})), Phnum: 1,
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	p := elf.Prog64{
		Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X),
		Vaddr: base, Paddr: base, Filesz: size, Memsz: size, Align: 0x1000,
	}
	var b bytes.Buffer
	if err := binary.Write(&b, binary.LittleEndian, h); err != nil {
		return nil, err
	}
	if err := binary.Write(&b, binary.LittleEndian, p); err != nil {
		return nil, err
	}
	b.Write(arch.code)
	return b.Bytes(), nil
}

// noopName is the exit program's file name.
const noopName = "caddy-spawn-task-delete"

// installNoop writes the exit program for goarch into dir and returns its
// path. It replaces the file atomically, so a containerd running an older
// copy never sees a half-written one.
func installNoop(dir, goarch string) (string, error) {
	prog, err := noopELF(goarch)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, noopName)
	tmp, err := os.CreateTemp(dir, "."+noopName+"-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(prog); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return path, os.Rename(tmp.Name(), path)
}
