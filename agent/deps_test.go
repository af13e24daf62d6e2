package agent_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestStdlibOnly fails when any package under agent/ depends on anything
// but the standard library and agent/... itself.
func TestStdlibOnly(t *testing.T) {
	const own = "github.com/lpmos/lpmos/agent"
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./...")
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("go list -deps ./agent/...: %v\n%s", err, msg)
	}
	var checked int
	for _, p := range strings.Fields(string(out)) {
		checked++
		if p != own && !strings.HasPrefix(p, own+"/") {
			t.Errorf("agent depends on %s: the agent must use the standard library only", p)
		}
	}
	if checked == 0 {
		t.Fatal("go list listed no agent packages: is the test running from agent/?")
	}
}
