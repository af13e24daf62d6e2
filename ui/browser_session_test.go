package ui_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestDashboardSignInSaysWhySessionEnded: after the admin token is rotated
// (elsewhere: through the API), the dashboard falls back to the sign-in
// page, which says why.
func TestDashboardSignInSaysWhySessionEnded(t *testing.T) {
	t.Parallel()
	e := newLiveTLS(t)
	tab := newBrowser(t, e.spki)
	browserLogin(t, tab, e)
	poll(t, tab, "live", `document.querySelector("#conn").dataset.state === "live"`)
	if resp, body := e.request(t, "POST", "/api/v1/auth/rotate-admin", "", http.Header{"Authorization": {"Bearer " + e.token}}); resp.StatusCode != 200 {
		t.Fatalf("rotate: %d %s", resp.StatusCode, body)
	}
	if err := chromedp.Do(tab, chromedp.Reload()); err != nil {
		t.Fatalf("reload: %v", err)
	}
	poll(t, tab, "sign-in page", `!document.querySelector("#login-view").hidden && document.querySelector("#app-view").hidden`)
	poll(t, tab, "reason shown", `document.querySelector("#login-error").textContent.includes("admin token was rotated")`)
	if msg := eval[string](t, tab, `document.querySelector("#login-error").textContent`); !strings.Contains(msg, "sign in") {
		t.Fatalf("sign-in message %q", msg)
	}
}
