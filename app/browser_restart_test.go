package app_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/lpmos/lpmos/internal/testenv"
)

// Issue 15 item 6 (Must show): a dashboard session survives a restart of
// `lpmos serve`. A real serve process (own data dir, loopback ports) is
// signed in from chromium, stopped, and started again on the same data dir
// and ports: the same tab, never reloaded, reconnects its live view and
// shows a task created after the restart; a reload stays signed in.
func TestDashboardSessionSurvivesServeRestart(t *testing.T) {
	// Parallel: the second serve takes the first one's ports back, and they
	// stay free meanwhile: serveArgs's ports come from storetest.FreePort,
	// which hands each out once per process and holds its lock file (other
	// test binaries) until this test ends, below the kernel's ephemeral
	// range (outgoing connections).
	t.Parallel()
	chromium := testenv.RequireTool(t, "chromium", "chromium") // Debian's /usr/bin/chromium
	dir := t.TempDir()
	args, url, ports := serveArgs(t, dir)
	first := &lpmosProc{dataDir: dir, url: url, ports: ports}
	spawn(t, "lpmos (first)", first, args)
	first.waitHealthy(t, 30*time.Second)
	token := first.token(t)

	// Reduced motion: the dashboard's CSS then stops its infinite pulses,
	// which otherwise render 60 frames a second while the test waits.
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("force-prefers-reduced-motion", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1600, 1000))...)
	tab, cancelTab := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	waitJS := func(what, expr string) {
		t.Helper()
		// Every 50 ms, not every animation frame (chromedp's default,
		// which keeps the page drawing frames while it waits).
		if _, err := chromedp.Run(tab, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(45*time.Second), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
			text, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.body.innerText.slice(0, 1500)`))
			t.Fatalf("%s: %v\npage text:\n%s", what, err, text)
		}
	}
	const (
		live     = `document.querySelector("#conn").dataset.state === "live"`
		signedIn = `document.querySelector("#login-view").hidden && !document.querySelector("#app-view").hidden`
	)
	if err := chromedp.Do(tab,
		chromedp.Navigate(url+"/"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#login-submit")),
	); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	waitJS("signed in, live", signedIn+` && `+live)
	if _, err := chromedp.Run(tab, chromedp.Evaluate[bool](`window.__sameDocument = true`)); err != nil {
		t.Fatal(err)
	}

	first.stop(t)
	waitJS("the page sees the server gone", `document.querySelector("#conn").dataset.state !== "live"`)
	second := &lpmosProc{dataDir: dir, url: url, ports: ports}
	spawn(t, "lpmos (second)", second, args)
	second.waitHealthy(t, 30*time.Second)

	// A change made after the restart reaches the same, never reloaded page.
	req, err := http.NewRequest("POST", url+"/api/v1/tasks", strings.NewReader(
		`{"region_id":"dc1","target_mac":"52:54:00:15:06:01","os_type":"ubuntu","os_version":"22.04","hostname":"after-restart","allow_missing_image":true}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create a task after the restart: %s", resp.Status)
	}
	row := `[...document.querySelectorAll("#task-scroll .tr")].some((r) => r.innerText.includes("after-restart"))`
	waitJS("the same tab reconnected and shows the new task", signedIn+` && `+live+` && `+row+` && window.__sameDocument === true`)

	// A reload keeps the session: no sign-in page.
	if err := chromedp.Do(tab, chromedp.Reload()); err != nil {
		t.Fatalf("reload: %v", err)
	}
	waitJS("signed in after a reload", signedIn+` && `+live+` && `+row+` && window.__sameDocument === undefined`)
	if shown, _ := chromedp.Run(tab, chromedp.Evaluate[bool](`!document.querySelector("#login-view").hidden`)); shown {
		t.Fatal("the sign-in page is shown")
	}
	t.Logf("signed in across the restart of serve on %s", url)
}
