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
	t.Parallel()
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
	t.Parallel()
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

// TestOperatorTokens: named operator tokens, several at once; the name is
// the actor in task events; a read-only one reads and gets 403 on writes;
// a removed one is refused at once.
func TestOperatorTokens(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts an lpmos process")
	}
	m1 := newClusterNode(t, "m1")
	m1.run(t, "serve", "--name", "m1")
	m1.waitHealthy(t, 30*time.Second)
	cli := func(args ...string) (string, error) {
		out, _, err := cliIn(append(args, "--server", m1.url, "--data-dir", m1.dataDir)...)
		return out, err
	}
	aliceOut, err := cli("token", "operator", "create", "alice")
	if err != nil {
		t.Fatal(err)
	}
	alice := strings.TrimSpace(aliceOut)
	grafanaOut, err := cli("token", "operator", "create", "grafana", "--read-only")
	if err != nil {
		t.Fatal(err)
	}
	grafana := strings.TrimSpace(grafanaOut)
	if _, err := cli("token", "operator", "create", "alice"); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, err := cli("token", "operator", "create", "bad name"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("bad name: %v", err)
	}
	out, err := cli("token", "operator", "list")
	if err != nil || !strings.Contains(out, "alice") || !strings.Contains(out, "admin") || !strings.Contains(out, "grafana") || !strings.Contains(out, "read-only") || strings.Contains(out, alice) {
		t.Fatalf("operator list: %v\n%s", err, out)
	}

	// alice acts: her name is in the task's events.
	var task store.Task
	if _, err := apiDo(t, "POST", m1.url+"/api/v1/tasks", alice, map[string]any{
		"region_id": "dc1", "target_mac": "52:54:00:00:0d:01", "os_type": "ubuntu", "os_version": "22.04", "allow_missing_image": true,
	}, &task); err != nil {
		t.Fatalf("alice creates a task: %v", err)
	}
	if _, err := apiDo(t, "DELETE", m1.url+"/api/v1/tasks/"+task.ID, alice, nil, nil); err != nil {
		t.Fatalf("alice cancels: %v", err)
	}
	if _, err := apiDo(t, "POST", m1.url+"/api/v1/tasks/"+task.ID+"/retry", m1.token(t), nil, nil); err != nil {
		t.Fatalf("admin retries: %v", err)
	}
	var events []store.Event
	if _, err := apiDo(t, "GET", m1.url+"/api/v1/tasks/"+task.ID+"/events", grafana, nil, &events); err != nil {
		t.Fatalf("read-only reads events: %v", err)
	}
	var msgs []string
	for _, e := range events {
		msgs = append(msgs, e.Message)
	}
	all := strings.Join(msgs, "|")
	if !strings.Contains(all, "cancelled by alice") || !strings.Contains(all, "retried by operator") {
		t.Fatalf("events do not name the actors: %q", all)
	}

	// grafana reads, and cannot write.
	for _, c := range []struct {
		method, path string
		body         any
		want         int
	}{
		{"GET", "/api/v1/tasks", nil, http.StatusOK},
		{"GET", "/api/v1/cluster/members", nil, http.StatusOK},
		{"POST", "/api/v1/tasks", map[string]any{"region_id": "dc1", "target_mac": "52:54:00:00:0d:02", "os_type": "ubuntu", "os_version": "22.04"}, http.StatusForbidden},
		{"DELETE", "/api/v1/tasks/" + task.ID, nil, http.StatusForbidden},
		{"POST", "/api/v1/auth/rotate-admin", nil, http.StatusForbidden},
		{"POST", "/api/v1/auth/operators", map[string]string{"name": "mallory"}, http.StatusForbidden},
	} {
		code, err := apiDo(t, c.method, m1.url+c.path, grafana, c.body, nil)
		if code != c.want {
			t.Errorf("read-only %s %s: %d (%v), want %d", c.method, c.path, code, err, c.want)
		} else if c.want == http.StatusForbidden && !strings.Contains(err.Error(), "read-only") {
			t.Errorf("read-only %s %s: %v does not say read-only", c.method, c.path, err)
		}
	}

	// A wrong secret and a removed token are refused at once.
	if code, _ := apiDo(t, "GET", m1.url+"/api/v1/tasks", alice+"x", nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %d", code)
	}
	if out, err := cli("token", "operator", "rm", "alice"); err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("rm alice: %v %s", err, out)
	}
	if code, _ := apiDo(t, "GET", m1.url+"/api/v1/tasks", alice, nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("removed token: %d, want 401", code)
	}
	if _, err := cli("token", "operator", "rm", "alice"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("rm twice: %v", err)
	}
	if code, _ := apiDo(t, "GET", m1.url+"/api/v1/tasks", grafana, nil, nil); code != http.StatusOK {
		t.Fatalf("grafana after alice's removal: %d", code)
	}
}
