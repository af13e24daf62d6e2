package app_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/store"
)

// TestJoinTokenCLI: `lpmos token create` makes single-use tokens unless
// --reusable, `token list` shows them (kind, expiry, state), `token rm`
// revokes one; a join with a revoked token is refused naming the cause and
// adds nobody; the token API needs the operator.
func TestJoinTokenCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an lpmos process")
	}
	m1, m2 := newClusterNode(t, "m1"), newClusterNode(t, "m2")
	m1.run(t, "serve", "--name", "m1")
	m1.waitHealthy(t, 30*time.Second)
	admin := m1.token(t)
	single := joinToken(t, m1, "--ttl", "10m")
	reusable := joinToken(t, m1, "--ttl", "2h", "--reusable")
	_, singleID, _, _ := store.ParseJoinToken(single)
	_, reusableID, _, _ := store.ParseJoinToken(reusable)

	if _, _, err := cliIn("token", "create", "--server", m1.url, "--data-dir", m1.dataDir, "--reusable", "--single-use"); err == nil || !strings.Contains(err.Error(), "--reusable alone") {
		t.Fatalf("--reusable --single-use: %v", err)
	}
	out, _, err := cliIn("token", "list", "--server", m1.url, "--data-dir", m1.dataDir)
	if err != nil {
		t.Fatalf("token list: %v", err)
	}
	for _, want := range []string{"ID", "EXPIRES", singleID + "  single-use", reusableID + "  reusable", "valid", "(in "} {
		if !strings.Contains(out, want) {
			t.Errorf("token list lacks %q:\n%s", want, out)
		}
	}
	out, _, err = cliIn("token", "rm", reusableID, "--server", m1.url, "--data-dir", m1.dataDir)
	if err != nil || !strings.Contains(out, "revoked") {
		t.Fatalf("token rm: %v %s", err, out)
	}
	var toks []store.JoinTokenInfo
	if _, err := apiDo(t, "GET", m1.url+"/api/v1/cluster/tokens", admin, nil, &toks); err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, tk := range toks {
		states[tk.ID] = tk.State
	}
	if states[singleID] != "valid" || states[reusableID] != "revoked" {
		t.Fatalf("token states after rm: %v", states)
	}
	if _, _, err := cliIn(append([]string{"join", m1.url, "--token", reusable, "--name", "m2", "--region-id", "dc2"}, m2.flags...)...); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("join with a revoked token: %v", err)
	}
	if st := members(t, m1, admin); len(st.Members) != 1 {
		t.Fatalf("refused join changed the members: %+v", st)
	}
	if _, _, err := cliIn("token", "rm", "nosuchtoken", "--server", m1.url, "--data-dir", m1.dataDir); err == nil || !strings.Contains(err.Error(), "no join token") {
		t.Fatalf("rm unknown: %v", err)
	}
	for _, c := range []struct{ method, path string }{{"GET", "/api/v1/cluster/tokens"}, {"DELETE", "/api/v1/cluster/tokens/" + singleID}} {
		if code, _ := apiDo(t, c.method, m1.url+c.path, "wrong", nil, nil); code != http.StatusUnauthorized {
			t.Errorf("%s %s without the admin token: %d", c.method, c.path, code)
		}
	}
}

// TestRotateAdminToken: `lpmos token rotate-admin` replaces the admin
// token: the old one is refused at once, the new one is printed once and
// is in <data-dir>/admin.token (0600), and the CLI works with it; the
// rotation itself needs the operator.
func TestRotateAdminToken(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an lpmos process")
	}
	m1 := newClusterNode(t, "m1")
	m1.run(t, "serve", "--name", "m1")
	m1.waitHealthy(t, 30*time.Second)
	old := m1.token(t)

	if code, _ := apiDo(t, "POST", m1.url+"/api/v1/auth/rotate-admin", "wrong", nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("rotate with a wrong token: %d", code)
	}
	out, errOut, err := cliIn("token", "rotate-admin", "--server", m1.url, "--data-dir", m1.dataDir)
	if err != nil {
		t.Fatalf("rotate-admin: %v\n%s", err, errOut)
	}
	newTok := strings.TrimSpace(out)
	if newTok == "" || newTok == old || strings.Contains(newTok, "\n") || !strings.Contains(errOut, "admin.token") {
		t.Fatalf("rotate-admin printed %q / %q", out, errOut)
	}
	path := filepath.Join(m1.dataDir, "admin.token")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token after the rotation: %v %v", fi, err)
	}
	if got := m1.token(t); got != newTok {
		t.Fatalf("admin.token holds %q, printed %q", got, newTok)
	}
	if code, _ := apiDo(t, "GET", m1.url+"/api/v1/tasks", old, nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("old admin token after the rotation: %d, want 401", code)
	}
	if _, err := apiDo(t, "GET", m1.url+"/api/v1/tasks", newTok, nil, nil); err != nil {
		t.Fatalf("new admin token: %v", err)
	}
	if _, _, err := cliIn("task", "list", "--server", m1.url, "--data-dir", m1.dataDir); err != nil {
		t.Fatalf("CLI with the rotated token: %v", err)
	}
	if _, _, err := cliIn("token", "rotate-admin", "--server", m1.url, "--token", old, "--data-dir", t.TempDir()); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("rotate with the old token: %v", err)
	}
	if got := m1.token(t); got != newTok {
		t.Fatalf("a refused rotation changed admin.token")
	}
}
