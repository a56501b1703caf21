package spawner

import (
	"bytes"
	"debug/elf"
	"os/exec"
	"runtime"
	"testing"
)

// TestNoopELF: the exit program parses as the ELF executable it claims to
// be for each architecture, with its entry point at the code; on this host's
// architecture it runs, prints nothing and exits 0 — what containerd needs
// of the runtime's "delete".
func TestNoopELF(t *testing.T) {
	for arch, want := range map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64} {
		prog, err := noopELF(arch)
		if err != nil {
			t.Fatal(err)
		}
		f, err := elf.NewFile(bytes.NewReader(prog))
		if err != nil {
			t.Fatalf("%s: not an ELF file: %v", arch, err)
		}
		if f.Machine != want || f.Type != elf.ET_EXEC || f.Class != elf.ELFCLASS64 || len(f.Progs) != 1 {
			t.Errorf("%s: machine %v type %v class %v, %d segments", arch, f.Machine, f.Type, f.Class, len(f.Progs))
		}
		p := f.Progs[0]
		code := noopCode[arch].code
		if p.Type != elf.PT_LOAD || f.Entry < p.Vaddr || f.Entry+uint64(len(code)) != p.Vaddr+p.Filesz ||
			!bytes.Equal(prog[f.Entry-p.Vaddr:], code) {
			t.Errorf("%s: entry %#x outside or not at the code of segment %+v", arch, f.Entry, p.ProgHeader)
		}
	}
	if _, err := noopELF("mips"); err == nil {
		t.Error("noopELF(mips) made a program")
	}

	path, err := installNoop(t.TempDir(), runtime.GOARCH)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, "-namespace", "caddy-spawn", "-id", "x", "delete")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || out.Len() != 0 {
		t.Fatalf("running it: %v, output %q; want exit 0 and no output", err, out.Bytes())
	}
}
