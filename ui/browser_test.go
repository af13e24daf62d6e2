package ui_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// xssHostname is what a hostile or broken agent could report. The store
// validates the operator's hostname as a DNS name, but not what the agent
// says about the machine, so the dashboard must render it as text.
const xssHostname = `<img src=x onerror=alert(1)>`

// pageWatch records what must never happen on the page: JavaScript dialogs
// (an injected alert), uncaught exceptions and console errors.
type pageWatch struct {
	mu       sync.Mutex
	problems []string
	confirm  *confirmAnswer // the window.confirm the test expects next (see expectConfirm)
}

func (w *pageWatch) add(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.problems = append(w.problems, s)
}

func (w *pageWatch) list() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.problems...)
}

func watchPage(t *testing.T, ctx context.Context, name string, w *pageWatch) {
	t.Helper()
	err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *page.EventJavascriptDialogOpening:
			accept, expected := w.answer(ev)
			if !expected {
				w.add(fmt.Sprintf("%s: dialog %q: %q", name, ev.Type, ev.Message))
			}
			go func() { // never block the tab on a dialog
				_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: accept})
			}()
		case *runtime.EventExceptionThrown:
			w.add(fmt.Sprintf("%s: exception: %s", name, exceptionText(ev.ExceptionDetails)))
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, string(a.Value))
				}
				w.add(fmt.Sprintf("%s: console.error %s", name, strings.Join(parts, " ")))
			}
		}
	})
	if err != nil {
		t.Fatalf("listen on %s: %v", name, err)
	}
}

// poll waits until the JavaScript expression is truthy in the tab. It
// evaluates it every 50 ms, not on every animation frame (chromedp's
// default): a frame-driven poll keeps the page rendering 60 frames a
// second for as long as it waits.
func poll(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(15*time.Second), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		var state string
		state, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText.slice(0, 2000)`))
		t.Fatalf("%s: %v\npage text:\n%s", what, err, state)
	}
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// browserLogin signs in with the admin token on the dashboard page.
func browserLogin(t *testing.T, tab context.Context, e *liveEnv) {
	t.Helper()
	if err := chromedp.Do(tab,
		chromedp.Navigate(e.url+"/"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), e.token),
		chromedp.Click(chromedp.CSS("#login-submit")),
	); err != nil {
		t.Fatalf("log in: %v", err)
	}
}

// TestDashboardInBrowser runs the dashboard over HTTPS, as `lpmos serve`
// serves it by default (the live updates then use wss://).
func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newLiveTLS(t)
	if err := e.store.PutImage(ctx, store.Image{OSType: "ubuntu", OSVersion: "22.04", Source: "/srv/ubuntu.img", Format: "raw",
		SHA256: strings.Repeat("ab", 32), Size: 1 << 30, FileSize: 1 << 30}); err != nil {
		t.Fatal(err)
	}

	// A certificate of the same test CA for a key chromium has no pin for
	// is refused: the pin is what makes the page load, not a blanket ignore.
	tab1 := newBrowser(t, e.spki)
	unpinned := unpinnedTLS(t, e)
	if err := chromedp.Do(tab1, chromedp.Navigate(unpinned+"/")); err == nil || !strings.Contains(err.Error(), "ERR_CERT") {
		t.Fatalf("chromium loaded %s, whose key it has no pin for: %v", unpinned, err)
	}
	var problems pageWatch
	// The first Run starts the browser: no timeout on this context.
	watchPage(t, tab1, "tab1", &problems)
	browserLogin(t, tab1, e)
	poll(t, tab1, "tab1 live", `document.querySelector("#conn").dataset.state === "live"`)
	if proto := eval[string](t, tab1, `location.protocol`); proto != "https:" {
		t.Fatalf("dashboard loaded over %q, want https:", proto)
	}
	if cookie := eval[string](t, tab1, `document.cookie`); strings.Contains(cookie, "lpmos_session") {
		t.Fatalf("the session cookie is readable from JavaScript: %q", cookie)
	}

	// A second tab of the same browser shares the session.
	tab2, cancel2 := chromedp.NewContext(tab1)
	defer cancel2()
	watchPage(t, tab2, "tab2", &problems)
	if err := chromedp.Do(tab2, chromedp.Navigate(e.url+"/")); err != nil {
		t.Fatalf("open tab2: %v", err)
	}
	poll(t, tab2, "tab2 live", `document.querySelector("#conn").dataset.state === "live"`)

	// Create a task through the API; the row appears without a reload.
	eval[bool](t, tab1, `window.__noReload = true`)
	resp, body := e.request(t, "POST", "/api/v1/tasks",
		`{"region_id":"dc1","target_mac":"52:54:00:aa:00:01","os_type":"ubuntu","os_version":"22.04","hostname":"web-01"}`,
		http.Header{"Authorization": {"Bearer " + e.token}})
	if resp.StatusCode != 201 {
		t.Fatalf("create task: %d %s", resp.StatusCode, body)
	}
	id := between(body, `"id":"`, `"`)
	row := fmt.Sprintf(`document.querySelector('#task-scroll .tr[data-id="%s"]')`, id)
	poll(t, tab1, "row appears in tab1", row+` !== null && `+row+`.querySelector(".host b").textContent === "web-01"`)
	poll(t, tab2, "row appears in tab2", row+` !== null`)
	if !eval[bool](t, tab1, `window.__noReload === true`) {
		t.Fatal("the page reloaded")
	}
	if got := eval[string](t, tab1, row+`.querySelector(".badge").dataset.status`); got != "pending" {
		t.Fatalf("badge %q", got)
	}

	// Open the task's detail, then the agent reports hardware.
	if err := chromedp.Do(tab1, chromedp.Click(chromedp.CSS(fmt.Sprintf(`#task-scroll .tr[data-id="%s"]`, id)))); err != nil {
		t.Fatalf("open detail: %v", err)
	}
	poll(t, tab1, "detail open", `!document.querySelector("#detail").hidden && document.querySelector("#d-id").textContent === "`+id+`"`)
	if _, err := e.store.ClaimTask(ctx, id, "agent-token"); err != nil {
		t.Fatal(err)
	}
	hw := sampleHardware(xssHostname)
	hw.DMI.Product = xssHostname + `<script>alert(2)</script>`
	if _, err := e.store.SetHardware(ctx, id, hw); err != nil {
		t.Fatal(err)
	}
	poll(t, tab1, "hardware panel fills", `(() => { const kv = document.querySelector("#hw-kv"); return kv && kv.textContent.includes("AMD EPYC 7543P") && kv.textContent.includes("UEFI") && document.querySelector("#hw-disks").textContent.includes("nvme0n1") && document.querySelector("#hw-nics").textContent.includes("ixgbe"); })()`)
	gotHost := eval[string](t, tab1, `document.querySelector('#hw-kv dd[data-k="Hostname"]').textContent`)
	if gotHost != xssHostname {
		t.Fatalf("agent hostname shown as %q, want the literal text %q", gotHost, xssHostname)
	}
	if sub := eval[string](t, tab1, row+`.querySelector(".host small").textContent`); !strings.Contains(sub, xssHostname) {
		t.Fatalf("row subtitle %q lacks the literal hostname", sub)
	}
	if n := eval[int](t, tab1, `document.querySelectorAll("img, script:not([src])").length`); n != 0 {
		t.Fatalf("agent text became %d element(s): rendered as HTML", n)
	}

	// Approve appears where the seed puts it, on pending_approval.
	poll(t, tab1, "approve button", `!document.querySelector("#approve").hidden && `+row+`.querySelector(".badge").dataset.status === "pending_approval"`)
	confirmed := problems.expectConfirm(true) // naming the disk: browser_disks_test.go
	if err := chromedp.Do(tab1, chromedp.Click(chromedp.CSS("#approve"))); err != nil {
		t.Fatalf("click approve: %v", err)
	}
	if msg := waitConfirm(t, confirmed); !strings.Contains(msg, "/dev/nvme0n1") {
		t.Fatalf("approve confirmation %q does not name the disk", msg)
	}
	poll(t, tab2, "tab2 sees approved", row+`.querySelector(".badge").dataset.status === "approved"`)
	poll(t, tab1, "approve button hidden", `document.querySelector("#approve").hidden`)
	if task, err := e.store.GetTask(ctx, id); err != nil || task.Status.Status != wire.StatusApproved {
		t.Fatalf("store after approve: %+v %v", task.Status, err)
	}

	// Progress: the bar's width and text follow each report, in both tabs.
	report := func(seq int64, stage string, pct int, msg string, done int64) {
		t.Helper()
		if _, err := e.store.ReportProgress(ctx, id, wire.Progress{Seq: seq, Stage: stage, Percentage: pct, Message: msg,
			BytesDone: done, BytesTotal: 1 << 30}); err != nil {
			t.Fatal(err)
		}
	}
	report(1, wire.StageDownloading, 35, "Downloading ubuntu 22.04", 400<<20)
	for _, tab := range []context.Context{tab1, tab2} {
		poll(t, tab, "bar at 35%", row+`.querySelector(".bar .fill").style.width === "35%" && `+row+`.querySelector(".ptext").textContent.includes("35% · downloading") && `+row+`.querySelector(".badge").dataset.status === "installing"`)
	}
	report(2, wire.StageDownloading, 52, "Downloading ubuntu 22.04", 700<<20)
	poll(t, tab1, "bar at 52% with bytes", row+`.querySelector(".bar .fill").style.width === "52%" && `+row+`.querySelector(".ptext").textContent.includes("700 MiB / 1.0 GiB")`)
	poll(t, tab1, "detail bar at 52%", `document.querySelector("#d-bar .fill").style.width === "52%" && document.querySelector("#d-bar").getAttribute("aria-valuenow") === "52"`)
	poll(t, tab2, "tab2 bar at 52%", row+`.querySelector(".bar .fill").style.width === "52%"`)
	poll(t, tab1, "timeline shows the stage", `document.querySelector("#timeline").textContent.includes("Stage: downloading")`)

	// Screenshot mid-install, after the bar's transition settles.
	time.Sleep(500 * time.Millisecond)
	shot, err := chromedp.Run(tab1, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("LPMOS_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "lpmos-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "dashboard-installing.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the dashboard mid-install: %s (%d bytes)", path, len(shot))

	report(3, wire.StageCompleted, 100, "Installation complete", 1<<30)
	if _, err := e.store.Transition(ctx, id, wire.StatusCompleted, "agent finished"); err != nil {
		t.Fatal(err)
	}
	poll(t, tab2, "tab2 completed", row+`.querySelector(".badge").dataset.status === "completed" && `+row+`.querySelector(".bar .fill").style.width === "100%"`)

	// Search by MAC filters the list.
	if err := chromedp.Do(tab1, chromedp.SendKeys(chromedp.CSS("#search"), "52-54-00-aa")); err != nil {
		t.Fatal(err)
	}
	poll(t, tab1, "search by MAC", `document.querySelectorAll("#task-scroll .tr").length === 1`)

	// The infrastructure tab lists the services and the etcd member (this
	// process's embedded one: a voter, the leader, healthy).
	if err := chromedp.Do(tab1, chromedp.Click(chromedp.CSS(`button.tab[data-tab="infra"]`))); err != nil {
		t.Fatal(err)
	}
	poll(t, tab1, "cluster member listed", `(() => { const li = document.querySelector("#members li");
		return !!li && li.innerText.includes("leader") && li.querySelector(".state").innerText === "healthy"; })()`)
	poll(t, tab1, "services listed", `document.querySelector("#services").innerText.includes("live-updates")`)

	if p := problems.list(); len(p) > 0 {
		t.Fatalf("page problems:\n%s", strings.Join(p, "\n"))
	}
}

func between(s, start, end string) string {
	_, after, ok := strings.Cut(s, start)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(after, end)
	return v
}

func exceptionText(d *runtime.ExceptionDetails) string {
	if d == nil {
		return ""
	}
	if d.Exception != nil && d.Exception.Description != "" {
		return d.Exception.Description
	}
	return d.Text
}

// setInput sets a form control's value and fires the event the page
// listens to, as a person's typing or choosing would.
func setInput(t *testing.T, tab context.Context, sel, value, event string) {
	t.Helper()
	js := fmt.Sprintf(`(() => { const el = document.querySelector(%q); el.value = %q; el.dispatchEvent(new Event(%q, {bubbles: true})); })()`, sel, value, event)
	if err := chromedp.Do(tab, chromedp.Evaluate[chromedp.Void](js)); err != nil {
		t.Fatalf("set %s to %q: %v", sel, value, err)
	}
}

// The NOSPACE alarm shows as a banner on the dashboard, whatever the tab,
// and goes away once lpmos recovered.
func TestDashboardShowsNoSpaceBanner(t *testing.T) {
	t.Parallel()
	st, ctx := smallStore(t, noSpaceQuota)
	e := newLiveOn(t, st)
	// Sign in first: a dashboard session is an etcd write, which NOSPACE
	// refuses (the sign-in page then names the alarm).
	tab := newBrowser(t)
	var problems pageWatch
	watchPage(t, tab, "tab", &problems)
	browserLogin(t, tab, e)
	fillLive(t, ctx, st)
	waitUntil(t, 10*time.Second, "the alarm in health", func() bool { _, rep := healthOf(t, e); return rep.Alarm != "" })
	banner := `document.querySelector("#alarm-banner")`
	poll(t, tab, "NOSPACE banner", `!`+banner+`.hidden && `+banner+`.textContent.includes("out of space (NOSPACE)")`)
	if got := eval[string](t, tab, banner+`.getAttribute("role")`); got != "alert" {
		t.Fatalf("banner role %q", got)
	}

	if _, err := st.Client().Delete(ctx, "/filler/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "recovery in health", func() bool { code, _ := healthOf(t, e); return code == 200 })
	if err := chromedp.Do(tab, chromedp.Navigate(e.url+"/")); err != nil {
		t.Fatal(err)
	}
	poll(t, tab, "banner gone after recovery", `document.querySelector("#conn").dataset.state === "live" && `+banner+`.hidden`)
	if p := problems.list(); len(p) > 0 {
		t.Fatalf("page problems: %v", p)
	}
}
