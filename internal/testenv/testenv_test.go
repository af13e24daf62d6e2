package testenv_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/internal/testenv"
)

// TestPolicy runs the helper in a child test for each case and checks
// the child skipped or failed with the one-line reason.
func TestPolicy(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") != "" {
		switch os.Getenv("TESTENV_CHILD") {
		case "tool":
			testenv.RequireTool(t, "lpmos-no-such-tool", "lpmos-pkg")
		case "hidden":
			testenv.RequireTool(t, "go", "golang")
		case "file":
			testenv.RequireFile(t, "/nonexistent/chromium", "chromium")
		case "root":
			testenv.RequireRoot(t, "loop devices")
		case "present":
			if p := testenv.RequireTool(t, "go", "golang"); p == "" {
				t.Fatal("no path for go")
			}
			return
		}
		t.Fatal("the helper returned although the requirement is missing")
	}
	tests := []struct {
		child, hide, requireAll string
		wantFail                bool
		want                    string
	}{
		{child: "tool", want: "skipped: needs lpmos-no-such-tool (apt-get install -y --no-install-recommends lpmos-pkg)"},
		{child: "tool", requireAll: "1", wantFail: true, want: "needs lpmos-no-such-tool (apt-get install -y --no-install-recommends lpmos-pkg) (LPMOS_TEST_REQUIRE_ALL=1"},
		{child: "hidden", hide: "chromium,go", want: "skipped: needs go"},
		{child: "file", requireAll: "1", wantFail: true, want: "needs /nonexistent/chromium"},
		{child: "file", want: "skipped: needs /nonexistent/chromium"},
		{child: "root", hide: "root", want: "skipped: needs root for loop devices"},
		{child: "present", want: "PASS"},
	}
	for _, tc := range tests {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPolicy$", "-test.v")
		cmd.Env = append(os.Environ(), "TESTENV_CHILD="+tc.child, testenv.HideEnv+"="+tc.hide, testenv.RequireAllEnv+"="+tc.requireAll)
		out, err := cmd.CombinedOutput()
		if failed := err != nil; failed != tc.wantFail {
			t.Errorf("%s (hide %q, require-all %q): failed=%v, want %v\n%s", tc.child, tc.hide, tc.requireAll, failed, tc.wantFail, out)
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: output lacks %q:\n%s", tc.child, tc.want, out)
		}
		if !tc.wantFail && tc.want != "PASS" && !strings.Contains(string(out), "--- SKIP") {
			t.Errorf("%s: not skipped:\n%s", tc.child, out)
		}
	}
}
