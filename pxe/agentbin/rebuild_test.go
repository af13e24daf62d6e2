//go:build !race

package agentbin

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/lpmos/lpmos/internal/testenv"
)

// The committed agents are byte for byte what the current agent source
// builds to. Not under -race, and only when asked (LPMOS_TEST_AGENT_REBUILD=1,
// or LPMOS_TEST_REQUIRE_ALL=1 as in .ci/run's own step for it):
// it cross-builds the agent for every architecture;
// TestEmbeddedAgentMatchesSource checks the inputs in every run.
func TestEmbeddedAgentRebuildsIdentically(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent for every architecture")
	}
	if os.Getenv("LPMOS_TEST_AGENT_REBUILD") != "1" && !testenv.RequireAll() {
		t.Skip("skipped: cross-builds the agent for every architecture (minutes on a fresh machine; TestEmbeddedAgentMatchesSource checked its sources): LPMOS_TEST_AGENT_REBUILD=1 or LPMOS_TEST_REQUIRE_ALL=1 (.ci/run) runs it")
	}
	testenv.RequireTool(t, "go", "golang-go")
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
