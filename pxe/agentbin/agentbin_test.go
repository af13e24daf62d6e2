package agentbin

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The committed agents must be what the current agent source builds to;
// otherwise lpmos would boot machines into a stale agent.
func TestEmbeddedAgentMatchesSource(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent for every architecture")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command in PATH")
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "run", "gen.go", "-raw", "-out", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the agent: %v\n%s", err, out)
	}
	for _, arch := range Arches() {
		fresh, err := os.ReadFile(filepath.Join(dir, "lpmos-agent-linux-"+arch))
		if err != nil {
			t.Fatal(err)
		}
		embedded, err := Binary(arch)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fresh, embedded) {
			t.Errorf("the embedded agent for %s (sha256 %s) is not a build of the current agent source (sha256 %s):\n"+
				"run `go generate ./...` and commit pxe/agentbin/%s (the build must use the Go version in go.mod)",
				arch, short(embedded), short(fresh), FileName(arch))
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
