package ui_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lpmos/lpmos/internal/health"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	"github.com/lpmos/lpmos/ui"
)

// openStore opens cfg's store until the (sub)test ends.
func openStore(t *testing.T, cfg store.Config) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// serveOn serves a control plane on st until the (sub)test ends.
func serveOn(t *testing.T, st *store.Store, tok string) *liveEnv {
	t.Helper()
	seedCreatable(t, st) // ui/create_checks_test.go: region dc1 known, image ubuntu 22.04
	reg := &health.Registry{}
	reg.Set("etcd", health.Running, nil)
	return serveLive(t, st, tok, ui.Config{Store: st, Health: reg, Version: "test", Logger: slog.New(slog.DiscardHandler)})
}

func loginWith(t *testing.T, e *liveEnv, token string) (*http.Cookie, ui.SessionInfo) {
	t.Helper()
	resp, body := e.request(t, "POST", "/api/v1/session", `{"token":"`+token+`"}`, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	var info ui.SessionInfo
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatal(err)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "lpmos_session" {
			return c, info
		}
	}
	t.Fatal("no session cookie")
	return nil, info
}

// sessionState asks GET /api/v1/session: the status, the error and
// whether the answer says the session ended.
func sessionState(t *testing.T, e *liveEnv, c *http.Cookie) (int, string, bool) {
	t.Helper()
	var cookies []*http.Cookie
	if c != nil {
		cookies = append(cookies, c)
	}
	resp, body := e.request(t, "GET", "/api/v1/session", "", nil, cookies...)
	var out struct {
		Error        string `json:"error"`
		SessionEnded bool   `json:"session_ended"`
	}
	_ = json.Unmarshal([]byte(body), &out)
	return resp.StatusCode, out.Error, out.SessionEnded
}

// TestDashboardSessionsInEtcd: a session opened on one control plane is
// valid on another process's control plane on the same cluster and after a
// restart of the member; rotating the admin token ends every admin-derived
// session on every control plane; removing an operator token ends its
// sessions; a read-only operator's session can watch (/ws) but not act; an
// expired or ended session says so.
func TestDashboardSessionsInEtcd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := storetest.Config(t, t.TempDir())
	task := `{"region_id":"dc1","target_mac":"52:54:00:30:00:01","os_type":"ubuntu","os_version":"22.04"}`
	var tok string
	var kept *http.Cookie
	var keptCSRF string

	t.Run("two control planes", func(t *testing.T) {
		stA := openStore(t, cfg)
		var err error
		if tok, _, err = stA.EnsureAdminToken(ctx); err != nil {
			t.Fatal(err)
		}
		a := serveOn(t, stA, tok)
		// B is another process's view: its own etcd client (mutual TLS,
		// the member's certificate), its own control plane.
		b := serveOn(t, openStore(t, storetest.ClientOf(cfg)), tok)

		c, info := loginWith(t, a, tok)
		if info.Actor != "operator" || info.Kind != "admin" {
			t.Fatalf("session info %+v", info)
		}
		if resp, body := b.request(t, "GET", "/api/v1/tasks", "", nil, c); resp.StatusCode != 200 {
			t.Fatalf("A's session on B: %d %s", resp.StatusCode, body)
		}
		if resp, body := b.request(t, "POST", "/api/v1/tasks", task, http.Header{"X-Csrf-Token": {info.CSRFToken}}, c); resp.StatusCode != 201 {
			t.Fatalf("A's session writes on B: %d %s", resp.StatusCode, body)
		}
		// Signing out on B ends it on A.
		if resp, _ := b.request(t, "DELETE", "/api/v1/session", "", http.Header{"X-Csrf-Token": {info.CSRFToken}}, c); resp.StatusCode != 204 {
			t.Fatalf("logout on B: %d", resp.StatusCode)
		}
		if code, msg, ended := sessionState(t, a, c); code != 401 || !ended || !strings.Contains(msg, "ended") {
			t.Fatalf("signed-out session on A: %d %q ended=%v", code, msg, ended)
		}
		kept, info = loginWith(t, a, tok)
		keptCSRF = info.CSRFToken
	})

	// The member restarts (same data dir and ports): the session stays.
	st := openStore(t, cfg)
	c := serveOn(t, st, tok)
	d := serveOn(t, openStore(t, storetest.ClientOf(cfg)), tok)
	resp, body := c.request(t, "GET", "/api/v1/session", "", nil, kept)
	if resp.StatusCode != 200 || !strings.Contains(body, keptCSRF) {
		t.Fatalf("session after restart: %d %s", resp.StatusCode, body)
	}
	if resp, body := d.request(t, "POST", "/api/v1/tasks", strings.Replace(task, ":01", ":02", 1), http.Header{"X-Csrf-Token": {keptCSRF}}, kept); resp.StatusCode != 201 {
		t.Fatalf("write after restart: %d %s", resp.StatusCode, body)
	}

	// No cookie: not logged in, and no "ended" message for the page.
	if code, _, ended := sessionState(t, c, nil); code != 401 || ended {
		t.Fatalf("no cookie: %d ended=%v", code, ended)
	}
	if code, msg, ended := sessionState(t, c, &http.Cookie{Name: "lpmos_session", Value: "forged"}); code != 401 || !ended || !strings.Contains(msg, "sign in again") {
		t.Fatalf("forged cookie: %d %q %v", code, msg, ended)
	}

	// Named operator tokens sign in too; the name is the actor.
	bearer := http.Header{"Authorization": {"Bearer " + tok}}
	mk := func(name, kind string) string {
		resp, body := c.request(t, "POST", "/api/v1/auth/operators", `{"name":"`+name+`","kind":"`+kind+`"}`, bearer)
		if resp.StatusCode != 201 {
			t.Fatalf("create operator %s: %d %s", name, resp.StatusCode, body)
		}
		var op store.OperatorToken
		if err := json.Unmarshal([]byte(body), &op); err != nil {
			t.Fatal(err)
		}
		return op.Token
	}
	aliceTok, grafanaTok := mk("alice", "admin"), mk("grafana", "read-only")
	alice, aliceInfo := loginWith(t, d, aliceTok)
	grafana, grafanaInfo := loginWith(t, c, grafanaTok)
	if aliceInfo.Actor != "alice" || grafanaInfo.Actor != "grafana" || grafanaInfo.Kind != "read-only" {
		t.Fatalf("operator sessions %+v %+v", aliceInfo, grafanaInfo)
	}
	resp, body = c.request(t, "POST", "/api/v1/tasks", strings.Replace(task, ":01", ":03", 1), bearer)
	if resp.StatusCode != 201 {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	id := between(body, `"id":"`, `"`)
	// Read-only: reads, watches /ws, cannot act.
	if resp, body := d.request(t, "GET", "/api/v1/tasks/"+id, "", nil, grafana); resp.StatusCode != 200 {
		t.Fatalf("read-only session reads: %d %s", resp.StatusCode, body)
	}
	if resp, body := d.request(t, "DELETE", "/api/v1/tasks/"+id, "", http.Header{"X-Csrf-Token": {grafanaInfo.CSRFToken}}, grafana); resp.StatusCode != 403 || !strings.Contains(body, "read-only") {
		t.Fatalf("read-only session cancels: %d %s", resp.StatusCode, body)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(c.url, "http") + "/ws"
	for name, hdr := range map[string]http.Header{
		"read-only session": {"Cookie": {grafana.String()}, "Origin": {c.url}},
		"read-only bearer":  {"Authorization": {"Bearer " + grafanaTok}},
	} {
		ws, _, err := websocket.Dial(wctx, wsURL, &websocket.DialOptions{HTTPHeader: hdr})
		if err != nil {
			t.Fatalf("/ws with a %s: %v", name, err)
		}
		ws.SetReadLimit(64 << 20)
		if m := readMsg(t, wctx, ws); m.Type != "snapshot" {
			t.Fatalf("/ws with a %s: first message %+v", name, m)
		}
		ws.CloseNow()
	}
	// Alice acts; the task's events name her.
	if resp, body := c.request(t, "DELETE", "/api/v1/tasks/"+id, "", http.Header{"X-Csrf-Token": {aliceInfo.CSRFToken}}, alice); resp.StatusCode != 200 {
		t.Fatalf("alice cancels: %d %s", resp.StatusCode, body)
	}
	if _, body := c.request(t, "GET", "/api/v1/tasks/"+id+"/events", "", bearer); !strings.Contains(body, "cancelled by alice") {
		t.Fatalf("events do not name alice: %s", body)
	}

	// Rotation through C ends admin-token sessions on C and D at once;
	// operator sessions stay.
	if resp, body := c.request(t, "POST", "/api/v1/auth/rotate-admin", "", bearer); resp.StatusCode != 200 {
		t.Fatalf("rotate: %d %s", resp.StatusCode, body)
	}
	for name, e := range map[string]*liveEnv{"C": c, "D": d} {
		if code, msg, ended := sessionState(t, e, kept); code != 401 || !ended || !strings.Contains(msg, "admin token was rotated") {
			t.Fatalf("admin session on %s after rotation: %d %q %v", name, code, msg, ended)
		}
		if resp, _ := e.request(t, "GET", "/api/v1/tasks", "", nil, kept); resp.StatusCode != 401 {
			t.Fatalf("admin session reads on %s after rotation: %d", name, resp.StatusCode)
		}
		if code, msg, _ := sessionState(t, e, alice); code != 200 {
			t.Fatalf("alice's session on %s after rotation: %d %s", name, code, msg)
		}
	}
	// An open /ws of grafana's session, and one of its bearer token.
	var open []*websocket.Conn
	for _, hdr := range []http.Header{
		{"Cookie": {grafana.String()}, "Origin": {c.url}},
		{"Authorization": {"Bearer " + grafanaTok}},
	} {
		ws, _, err := websocket.Dial(wctx, wsURL, &websocket.DialOptions{HTTPHeader: hdr})
		if err != nil {
			t.Fatal(err)
		}
		ws.SetReadLimit(64 << 20)
		defer ws.CloseNow()
		open = append(open, ws)
	}
	// Removing grafana's token ends its sessions (and its /ws).
	if resp, body := d.request(t, "DELETE", "/api/v1/auth/operators/grafana", "", nil, alice); resp.StatusCode != 403 {
		t.Fatalf("remove without CSRF: %d %s", resp.StatusCode, body)
	}
	if resp, body := d.request(t, "DELETE", "/api/v1/auth/operators/grafana", "", http.Header{"X-Csrf-Token": {aliceInfo.CSRFToken}}, alice); resp.StatusCode != 200 {
		t.Fatalf("remove grafana: %d %s", resp.StatusCode, body)
	}
	if code, msg, ended := sessionState(t, c, grafana); code != 401 || !ended || !strings.Contains(msg, `operator token "grafana" was removed`) {
		t.Fatalf("grafana's session after removal: %d %q %v", code, msg, ended)
	}
	dctx, cancelDial := context.WithTimeout(ctx, 10*time.Second) // wctx's 10 s are for the dials above
	defer cancelDial()
	if _, resp, err := websocket.Dial(dctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {grafana.String()}, "Origin": {c.url}}}); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("/ws with a removed operator's session: %v", err)
	}
	for i, ws := range open {
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		var err error
		for err == nil {
			_, _, err = ws.Read(rctx)
		}
		cancel()
		if websocket.CloseStatus(err) != websocket.StatusPolicyViolation || !strings.Contains(err.Error(), "removed") {
			t.Fatalf("open /ws %d of the removed operator: %v, want closed 1008 naming the removal", i, err)
		}
	}
	// A re-created token of the same name does not revive old sessions.
	bearer = http.Header{"Authorization": {"Bearer " + aliceTok}}
	mk("grafana", "read-only")
	if code, _, _ := sessionState(t, c, grafana); code != 401 {
		t.Fatalf("grafana's old session after re-creation: %d", code)
	}

	// An expired session says it expired.
	cred, ok, err := st.CheckCredential(ctx, aliceTok)
	if err != nil || !ok {
		t.Fatalf("check alice: %v %v", ok, err)
	}
	sid, _, err := st.CreateDashboardSession(ctx, cred, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	short := &http.Cookie{Name: "lpmos_session", Value: sid}
	if code, _, _ := sessionState(t, d, short); code != 200 {
		t.Fatalf("fresh short session: %d", code)
	}
	time.Sleep(1100 * time.Millisecond)
	if code, msg, ended := sessionState(t, d, short); code != 401 || !ended || !strings.Contains(msg, "expired at") {
		t.Fatalf("expired session: %d %q %v", code, msg, ended)
	}
}
