package ui_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store/storetest"
	"github.com/lpmos/lpmos/ui"
)

func login(t *testing.T, e *liveEnv) (*http.Cookie, string) {
	t.Helper()
	resp, body := e.request(t, "POST", "/api/v1/session", `{"token":"`+e.token+`"}`, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	var info ui.SessionInfo
	if err := json.Unmarshal([]byte(body), &info); err != nil || info.CSRFToken == "" {
		t.Fatalf("login answer %s: %v", body, err)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "lpmos_session" {
			return c, info.CSRFToken
		}
	}
	t.Fatal("no session cookie")
	return nil, ""
}

func TestSessionLoginCookieAndCSRF(t *testing.T) {
	t.Parallel()
	e := newLive(t)

	if resp, _ := e.request(t, "POST", "/api/v1/session", `{"token":"wrong"}`, nil); resp.StatusCode != 401 || len(resp.Cookies()) != 0 {
		t.Fatalf("bad token: %d %v", resp.StatusCode, resp.Cookies())
	}
	// A cross-site HTML form cannot send JSON: form posts are refused.
	if resp, _ := e.request(t, "POST", "/api/v1/session", "token="+e.token, http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}); resp.StatusCode != 415 {
		t.Fatalf("form login: %d", resp.StatusCode)
	}

	resp, body := e.request(t, "POST", "/api/v1/session", `{"token":"`+e.token+`"}`, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	raw := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"lpmos_session=", "HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(raw, want) {
			t.Errorf("cookie %q lacks %s", raw, want)
		}
	}
	if strings.Contains(raw, "Secure") {
		t.Errorf("cookie over plain HTTP is Secure (the browser would drop it): %q", raw)
	}
	if strings.Contains(body, e.token) {
		t.Error("login answer echoes the admin token")
	}
	cookie, csrf := login(t, e)
	if cookie.Value == "" || len(cookie.Value) < 32 || cookie.Value == csrf {
		t.Fatalf("weak session id %q", cookie.Value)
	}

	task := `{"region_id":"dc1","target_mac":"52:54:00:10:00:01","os_type":"ubuntu","os_version":"22.04"}`
	// Reads need only the cookie.
	if resp, body := e.request(t, "GET", "/api/v1/tasks", "", nil, cookie); resp.StatusCode != 200 {
		t.Fatalf("GET with session: %d %s", resp.StatusCode, body)
	}
	// Writes need the CSRF token too.
	if resp, body := e.request(t, "POST", "/api/v1/tasks", task, nil, cookie); resp.StatusCode != 403 || !strings.Contains(body, "X-CSRF-Token") {
		t.Fatalf("POST without CSRF: %d %s", resp.StatusCode, body)
	}
	if resp, _ := e.request(t, "POST", "/api/v1/tasks", task, http.Header{"X-Csrf-Token": {csrf + "x"}}, cookie); resp.StatusCode != 403 {
		t.Fatalf("POST with a wrong CSRF token: %d", resp.StatusCode)
	}
	// Another session's CSRF token does not open this one.
	_, otherCSRF := login(t, e)
	if resp, _ := e.request(t, "POST", "/api/v1/tasks", task, http.Header{"X-Csrf-Token": {otherCSRF}}, cookie); resp.StatusCode != 403 {
		t.Fatalf("POST with another session's CSRF token: %d", resp.StatusCode)
	}
	resp, body = e.request(t, "POST", "/api/v1/tasks", task, http.Header{"X-Csrf-Token": {csrf}}, cookie)
	if resp.StatusCode != 201 {
		t.Fatalf("POST with CSRF: %d %s", resp.StatusCode, body)
	}
	// The bearer token still works without any session (CLI).
	if resp, _ := e.request(t, "GET", "/api/v1/tasks", "", http.Header{"Authorization": {"Bearer " + e.token}}); resp.StatusCode != 200 {
		t.Fatalf("bearer: %d", resp.StatusCode)
	}
	// A forged cookie opens nothing.
	if resp, _ := e.request(t, "GET", "/api/v1/tasks", "", nil, &http.Cookie{Name: "lpmos_session", Value: "forged"}); resp.StatusCode != 401 {
		t.Fatalf("forged cookie: %d", resp.StatusCode)
	}
	// GET /api/v1/session gives the page its CSRF token back after a reload.
	resp, body = e.request(t, "GET", "/api/v1/session", "", nil, cookie)
	if resp.StatusCode != 200 || !strings.Contains(body, csrf) {
		t.Fatalf("session: %d %s", resp.StatusCode, body)
	}
	// Logout needs the CSRF token, then the cookie is dead.
	if resp, _ := e.request(t, "DELETE", "/api/v1/session", "", nil, cookie); resp.StatusCode != 403 {
		t.Fatalf("logout without CSRF: %d", resp.StatusCode)
	}
	if resp, _ := e.request(t, "DELETE", "/api/v1/session", "", http.Header{"X-Csrf-Token": {csrf}}, cookie); resp.StatusCode != 204 {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if resp, _ := e.request(t, "GET", "/api/v1/tasks", "", nil, cookie); resp.StatusCode != 401 {
		t.Fatalf("after logout: %d", resp.StatusCode)
	}
}

func TestSessionCookieSecureUnderTLS(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	tok, _, err := st.EnsureAdminToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ui.New(ui.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", "https://lpmos.example/api/v1/session", strings.NewReader(`{"token":"`+tok+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.TLS = &tls.ConnectionState{}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	raw := rec.Header().Get("Set-Cookie")
	if rec.Code != 200 || !strings.Contains(raw, "Secure") || !strings.Contains(raw, "HttpOnly") || !strings.Contains(raw, "SameSite=Strict") {
		t.Fatalf("TLS login: %d cookie %q", rec.Code, raw)
	}
	if rec.Header().Get("Strict-Transport-Security") == "" {
		t.Error("no HSTS under TLS")
	}
}

func TestSecurityHeadersAndAssets(t *testing.T) {
	t.Parallel()
	e := newLive(t)
	for _, path := range []string{"/", "/assets/app.js", "/assets/style.css", "/api/v1/health", "/api/v1/tasks"} {
		resp, body := e.request(t, "GET", path, "", nil)
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self' ws: wss:",
			"img-src 'self' data:", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("%s: CSP allows unsafe sources: %q", path, csp)
		}
		for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"} {
			if h.Get(k) != v {
				t.Errorf("%s: %s = %q, want %q", path, k, h.Get(k), v)
			}
		}
		switch path {
		case "/":
			if resp.StatusCode != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(body, `<script type="module" src="/assets/app.js">`) {
				t.Errorf("/: %d %s", resp.StatusCode, h.Get("Content-Type"))
			}
		case "/assets/app.js":
			if resp.StatusCode != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/javascript") {
				t.Errorf("app.js: %d %s", resp.StatusCode, h.Get("Content-Type"))
			}
		}
	}
	for _, path := range []string{"/assets/", "/assets/../server.go", "/assets/nope.js", "/index.html"} {
		if resp, _ := e.request(t, "GET", path, "", nil); resp.StatusCode != 404 {
			t.Errorf("%s: %d, want 404", path, resp.StatusCode)
		}
	}
}

// The dashboard's own source keeps the CSP honest: no inline script, no
// inline handlers or styles in the markup, and no HTML sinks in the code.
func TestDashboardSourceHasNoInlineScriptOrHTMLSinks(t *testing.T) {
	t.Parallel()
	page, err := os.ReadFile("web/index.html")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`<script(?:[^>](?:[^s]|s[^r]|sr[^c]))*?>`).FindAll(page, -1); len(m) > 0 {
		for _, tag := range m {
			if !strings.Contains(string(tag), "src=") {
				t.Errorf("inline script: %s", tag)
			}
		}
	}
	if m := regexp.MustCompile(`(?i)\s(on[a-z]+|style)\s*=`).FindAll(page, -1); len(m) > 0 {
		t.Errorf("inline handlers or styles in index.html: %q", m)
	}
	err = fs.WalkDir(os.DirFS("web"), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(p) != ".js" {
			return err
		}
		src, err := os.ReadFile(filepath.Join("web", p))
		if err != nil {
			return err
		}
		for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
			if strings.Contains(string(src), sink) {
				t.Errorf("%s uses %s", p, sink)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestWebSocketAuthOriginAndStream(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newLive(t)
	wsURL := "ws" + strings.TrimPrefix(e.url, "http") + "/ws"

	// No credentials: refused before the upgrade.
	if _, resp, err := websocket.Dial(ctx, wsURL, nil); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("anonymous /ws: %v %v", err, resp)
	}
	// A page on another origin, even with a valid session, is refused.
	cookie, _ := login(t, e)
	hdr := http.Header{"Cookie": {cookie.String()}, "Origin": {"http://evil.example"}}
	if _, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: hdr}); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("cross-origin /ws: %v %v", err, resp)
	}
	// Same origin with the session cookie: accepted, snapshot first.
	hdr.Set("Origin", e.url)
	c, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		t.Fatalf("same-origin /ws with session: %v", err)
	}
	defer c.CloseNow()
	if m := readMsg(t, ctx, c); m.Type != "snapshot" {
		t.Fatalf("first message %+v", m)
	}

	// Bearer client too; both see a change made through the REST API.
	b := e.dialWS(t, ctx)
	if m := readMsg(t, ctx, b); m.Type != "snapshot" {
		t.Fatalf("first message %+v", m)
	}
	resp, body := e.request(t, "POST", "/api/v1/tasks", `{"region_id":"dc1","target_mac":"52:54:00:20:00:01","os_type":"ubuntu","os_version":"22.04","hostname":"web-01"}`,
		http.Header{"Authorization": {"Bearer " + e.token}})
	if resp.StatusCode != 201 {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	for _, conn := range []*websocket.Conn{c, b} {
		m, _ := readUntil(t, ctx, conn, func(m wsMsg) bool { return m.Type == "task" })
		if m.Task == nil || m.Task.Spec.Hostname != "web-01" || m.Task.Status.Status != wire.StatusPending {
			t.Fatalf("task message %+v", m)
		}
	}
}

// Two lpmos processes on one etcd cluster, each serving the dashboard: a
// task approved through one shows up live on the other's /ws.
func TestWebSocketAcrossMembers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	stA, stB := twoStores(t)
	a, b := newLiveOn(t, stA), newLiveOn(t, stB)
	b.token = a.token // one cluster, one admin token (B found it already made)
	conn := b.dialWS(t, ctx)
	if snap := readMsg(t, ctx, conn); snap.Type != "snapshot" {
		t.Fatalf("first message on B: %+v", snap)
	}
	task := walkToApproved(t, ctx, stA, "52:54:00:30:00:01")
	if m, _ := readUntil(t, ctx, conn, func(m wsMsg) bool {
		return m.Type == "status" && m.TaskID == task.ID && m.Status == wire.StatusApproved
	}); m.Revision == 0 {
		t.Fatalf("B saw %+v", m)
	}
	if resp, body := a.request(t, "DELETE", "/api/v1/tasks/"+task.ID, "", http.Header{"Authorization": {"Bearer " + a.token}}); resp.StatusCode != 200 {
		t.Fatalf("cancel through A: %d %s", resp.StatusCode, body)
	}
	m, _ := readUntil(t, ctx, conn, func(m wsMsg) bool { return m.Type == "status" && m.TaskID == task.ID })
	if m.Status != wire.StatusCancelled {
		t.Fatalf("B saw %+v", m)
	}
}
