package agentbin

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/lpmos/lpmos/internal/testenv"
	"github.com/lpmos/lpmos/pxe/agentbin/srcdigest"
)

// The committed agents must be what the current agent source builds to;
// otherwise lpmos would boot machines into a stale agent. This compares
// the inputs (srcdigest: toolchain, gen.go, every agent source file) with
// the record gen.go wrote next to the binaries, and the binaries with the
// hashes in that record, in about a second; the byte-for-byte rebuild is
// TestEmbeddedAgentRebuildsIdentically (not under -race: it cross-builds
// the agent for every architecture; .ci/run runs it on its own).
func TestEmbeddedAgentMatchesSource(t *testing.T) {
	testenv.RequireTool(t, "go", "golang-go")
	data, err := os.ReadFile(srcdigest.FileName)
	if err != nil {
		t.Fatalf("%v: run `go generate ./pxe/agentbin` and commit pxe/agentbin", err)
	}
	rec, err := srcdigest.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	got, err := srcdigest.Compute("../..", "gen.go", runtime.Version(), Arches())
	if err != nil {
		t.Fatal(err)
	}
	if got != rec.Source {
		t.Errorf("the embedded agents were built from other sources than the current agent/ (or another Go than %s): "+
			"run `go generate ./pxe/agentbin` and commit pxe/agentbin/*.gz and %s", runtime.Version(), srcdigest.FileName)
	}
	for _, arch := range Arches() {
		bin, err := Binary(arch)
		if err != nil {
			t.Fatal(err)
		}
		name := "lpmos-agent-linux-" + arch
		if sum := fmt.Sprintf("%x", sha256.Sum256(bin)); sum != rec.Binaries[name] {
			t.Errorf("%s (sha256 %.16s) is not the binary %s records (%.16s): run `go generate ./pxe/agentbin`", FileName(arch), sum, srcdigest.FileName, rec.Binaries[name])
		}
	}
}

func short(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b))[:16] }

func TestBinaryIsStaticLinuxELF(t *testing.T) {
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	for _, arch := range Arches() {
		bin, err := Binary(arch)
		if err != nil {
			t.Fatal(err)
		}
		f, err := elf.NewFile(bytes.NewReader(bin))
		if err != nil {
			t.Fatalf("%s: not ELF: %v", arch, err)
		}
		if f.Machine != want[arch] {
			t.Errorf("%s: machine %v", arch, f.Machine)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s: dynamically linked (has an interpreter)", arch)
			}
		}
		if f.Section(".symtab") != nil {
			t.Errorf("%s: not stripped", arch)
		}
	}
	if _, err := Binary("mips"); err == nil {
		t.Error("Binary(mips) succeeded")
	}
}
