package ui_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/testenv"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

const tasks10k = 10000

// seedTasks creates n pending tasks in bulk (store.CreateTasks: seconds,
// not an fsync per task): MAC 02:00:00:00:hh:ll and hostname node-NNNNN
// for task i; the ids in that order.
func seedTasks(tb testing.TB, st *store.Store, n int) []string {
	tb.Helper()
	specs := make([]store.Spec, n)
	for i := range specs {
		specs[i] = store.Spec{RegionID: "dc1", TargetMAC: fmt.Sprintf("02:00:00:00:%02x:%02x", i/256, i%256),
			OSType: "ubuntu", OSVersion: "22.04", Hostname: fmt.Sprintf("node-%05d", i)}
	}
	// Four bulk writers at once: the MACs are disjoint, and etcd batches
	// their transactions (under -race, 30 s sequentially).
	const writers = 4
	ids := make([]string, n)
	errs := make(chan error, writers)
	per := (n + writers - 1) / writers
	for w := range writers {
		lo, hi := min(w*per, n), min((w+1)*per, n)
		go func() {
			tasks, err := st.CreateTasks(context.Background(), specs[lo:hi])
			for i, task := range tasks {
				ids[lo+i] = task.ID
			}
			errs <- err
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			tb.Fatalf("seed %d tasks: %v", n, err)
		}
	}
	return ids
}

// rendered10k: the count says 10,000 and the list shows its first rows.
var rendered10k = fmt.Sprintf(`document.querySelector("#count-tasks").innerText === "%d" && document.querySelectorAll("#task-scroll .tr").length > 0`, tasks10k)

// Issue 15 item 10 (Must show: 10,000 tasks still render): with 10,000
// tasks the list renders only the rows in view (virtual scrolling, also
// scrolled to the end), and search, the status filter and live changes
// work at that size. How fast: BenchmarkDashboardRender10k.
func TestDashboardWith10kTasks(t *testing.T) {
	heavyTurn(t) // 10,000 tasks under -race are CPU: one heavy test at a time
	ctx := context.Background()
	// Seeded before the control plane serves: its hub then loads the
	// 10,000 tasks once instead of following 40,000 writes (a third of
	// the seeding's CPU under -race).
	st := storetest.New(t)
	start := time.Now()
	ids := seedTasks(t, st, tasks10k)
	t.Logf("seeded %d tasks in %s", tasks10k, time.Since(start).Round(time.Millisecond))
	e := newLiveOn(t, st)

	tab := newBrowser(t)
	var problems pageWatch
	watchPage(t, tab, "tab", &problems)
	start = time.Now()
	browserLogin(t, tab, e)
	poll(t, tab, "10,000 tasks listed", rendered10k)
	t.Logf("10,000 tasks: sign-in to rendered list in %s (timed: BenchmarkDashboardRender10k)", time.Since(start).Round(time.Millisecond))
	const rowsInDOM = `document.querySelectorAll("#task-scroll .tr").length`
	if rows := eval[int](t, tab, rowsInDOM); rows > 200 {
		t.Fatalf("%d task rows in the page: the list must render only what is visible", rows)
	}
	// The scroll area is as tall as 10,000 rows; scrolled to the end, the
	// last rows are rendered, still only a screenful.
	if h := eval[float64](t, tab, `document.querySelector("#task-scroll").scrollHeight`); h < tasks10k*40 {
		t.Fatalf("scroll height %v: not sized for %d rows", h, tasks10k)
	}
	eval[bool](t, tab, `(() => { const sc = document.querySelector("#task-scroll"); sc.scrollTop = sc.scrollHeight; sc.dispatchEvent(new Event("scroll")); return true; })()`)
	poll(t, tab, "the end of the list rendered", fmt.Sprintf(`document.querySelectorAll("#task-scroll .tr").length > 0 && %s < 200 &&
		document.querySelector('#task-scroll .tr[aria-rowindex="%d"]') !== null && document.querySelector('#task-scroll .tr[aria-rowindex="2"]') === null`, rowsInDOM, tasks10k+1))

	// Search by MAC, written the other way round.
	if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.CSS("#search"), "02-00-00-00-27-0f")); err != nil {
		t.Fatal(err)
	}
	poll(t, tab, "search finds one task of 10,000", `(() => { const rows = document.querySelectorAll("#task-scroll .tr");
		return rows.length === 1 && rows[0].innerText.includes("node-09999"); })()`)
	setInput(t, tab, "#search", "node-0999", "input") // node-09990 .. node-09999
	poll(t, tab, "search by hostname", `document.querySelectorAll("#task-scroll .tr").length === 10`)
	setInput(t, tab, "#search", "", "input")

	// Live changes at this size: cancelled ones show under the filter, and
	// a task in view changes its badge.
	for _, id := range ids[5000:5003] {
		if _, err := e.store.Transition(ctx, id, wire.StatusCancelled, "test"); err != nil {
			t.Fatal(err)
		}
	}
	setInput(t, tab, "#filter-status", "cancelled", "change")
	poll(t, tab, "status filter shows the 3 cancelled tasks", `document.querySelectorAll("#task-scroll .tr").length === 3`)
	setInput(t, tab, "#filter-status", "", "change")
	poll(t, tab, "all again", rendered10k+` && document.querySelectorAll("#task-scroll .tr").length > 3`)
	first := eval[string](t, tab, `document.querySelector("#task-scroll .tr").dataset.id`)
	if _, err := e.store.Transition(ctx, first, wire.StatusCancelled, "test"); err != nil {
		t.Fatal(err)
	}
	poll(t, tab, "live status change in a row of 10,000", `document.querySelector('`+rowSel(first)+` .badge').dataset.status === "cancelled"`)
	if p := problems.list(); len(p) > 0 {
		t.Fatalf("page problems:\n%s", strings.Join(p, "\n"))
	}
}

// pageClock records, in the page's own clock, when the sign-in button is
// clicked, when a /ws message of over 1 MB (the snapshot) is dispatched,
// and when the count shows all the tasks (the rows are drawn by then, in
// the same task): the split of the wait between server and page.
const pageClock = `window.__clock = {};
document.addEventListener("click", (e) => { if (e.target.id === "login-submit") window.__clock.click = performance.now(); }, true);
const NativeWS = window.WebSocket;
window.WebSocket = class extends NativeWS {
	constructor(...args) {
		super(...args);
		this.addEventListener("message", (e) => { if (e.data.length > 1e6 && !window.__clock.snapshot) { window.__clock.snapshot = performance.now(); window.__clock.bytes = e.data.length; } });
	}
};
document.addEventListener("DOMContentLoaded", () => new MutationObserver(() => {
	if (document.querySelector("#count-tasks").innerText === "%d" && !window.__clock.rendered) window.__clock.rendered = performance.now();
}).observe(document.querySelector("#count-tasks"), {childList: true, characterData: true, subtree: true}));`

// BenchmarkDashboardRender10k times what an operator waits for with
// 10,000 tasks: from opening the dashboard (signed out) and signing in to
// the list rendered (snapshot over /ws, rows drawn). Each iteration clears
// the cookies, so it signs in afresh; the seeding is not timed.
// ms/signin-to-rendered is the figure: from the click on "Sign in" to the
// list drawn, in the page's own clock; of that, ms/click-to-snapshot
// (sign-in, /ws, the server's snapshot) and ms/snapshot-to-rendered (the
// page parsing and drawing it). ns/op is the same span seen from the test
// through chromedp (click, then polling every 10 ms), which on a busy box
// adds seconds of DevTools latency. Untimed: ms/signin-page, opening the
// dashboard until the sign-in form shows.
//
//	go test -run '^$' -bench BenchmarkDashboardRender10k -benchtime 5x ./ui/
func BenchmarkDashboardRender10k(b *testing.B) {
	chromium := testenv.RequireTool(b, "chromium", "chromium")
	e := newLive(b)
	seedTasks(b, e.store, tasks10k)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("no-first-run", true),
		chromedp.UserDataDir(b.TempDir()), chromedp.WindowSize(1600, 1000))...)
	defer cancelAlloc()
	tab, cancelTab := chromedp.NewContext(alloc)
	defer cancelTab()
	if err := chromedp.Do(tab, chromedp.Navigate("about:blank")); err != nil { // starts the browser
		b.Fatal(err)
	}
	if _, err := chromedp.Call(tab, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: fmt.Sprintf(pageClock, tasks10k)}); err != nil {
		b.Fatal(err)
	}
	type clock struct{ Click, Snapshot, Rendered, Bytes float64 }
	var load time.Duration
	var sum clock
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := chromedp.Do(tab, chromedp.Navigate("about:blank")); err != nil {
			b.Fatal(err)
		}
		if _, err := chromedp.Call(tab, network.ClearBrowserCookies, cdp.Empty{}); err != nil {
			b.Fatal(err)
		}
		loading := time.Now()
		if err := chromedp.Do(tab,
			chromedp.Navigate(e.url+"/"),
			chromedp.WaitVisible(chromedp.CSS("#token")),
		); err != nil {
			b.Fatalf("sign-in page: %v", err)
		}
		load += time.Since(loading)
		if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.CSS("#token"), e.token)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := chromedp.Do(tab,
			chromedp.Click(chromedp.CSS("#login-submit")),
			chromedp.Poll[chromedp.Void](rendered10k, chromedp.WithPollingTimeout(60*time.Second), chromedp.WithPollingInterval(10*time.Millisecond)),
		); err != nil {
			b.Fatalf("sign in and render: %v", err)
		}
		b.StopTimer()
		c, err := chromedp.Run(tab, chromedp.Evaluate[clock](`window.__clock`))
		if err != nil || c.Click == 0 || c.Snapshot < c.Click || c.Rendered < c.Snapshot {
			b.Fatalf("page clock %+v: %v", c, err)
		}
		sum.Click += c.Snapshot - c.Click
		sum.Snapshot += c.Rendered - c.Snapshot
		sum.Bytes = c.Bytes
		b.StartTimer()
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(load.Milliseconds())/n, "ms/signin-page")
	b.ReportMetric((sum.Click+sum.Snapshot)/n, "ms/signin-to-rendered")
	b.ReportMetric(sum.Click/n, "ms/click-to-snapshot")
	b.ReportMetric(sum.Snapshot/n, "ms/snapshot-to-rendered")
	b.ReportMetric(sum.Bytes/1e6, "MB/snapshot")
}
