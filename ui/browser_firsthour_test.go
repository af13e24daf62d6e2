package ui_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

// pendingApproval creates a task and walks it to pending_approval (claimed,
// hardware reported), as a region and an agent would.
func pendingApproval(t *testing.T, ctx context.Context, st *store.Store, mac, host string) store.Task {
	t.Helper()
	task, err := st.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: mac, OSType: "ubuntu", OSVersion: "22.04", Hostname: host})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ClaimTask(ctx, task.ID, "agent-token"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetHardware(ctx, task.ID, sampleHardware(host)); err != nil {
		t.Fatal(err)
	}
	return task
}

func rowSel(id string) string { return fmt.Sprintf(`#task-scroll .tr[data-id="%s"]`, id) }

func click(t *testing.T, tab context.Context, sel string) {
	t.Helper()
	if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS(sel))); err != nil {
		t.Fatalf("click %s: %v", sel, err)
	}
}

func taskStatus(t *testing.T, ctx context.Context, st *store.Store, id string) wire.Status {
	t.Helper()
	task, err := st.GetTask(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return task.Status.Status
}

// Issue 15 item 5: Approve asks first, naming the machine (hostname and
// MAC) and the disk it will erase; dismissing approves nothing.
func TestDashboardApproveConfirmationNamesMachine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newLive(t)
	task := pendingApproval(t, ctx, e.store, "52:54:00:15:05:01", "web-15")
	tab := newBrowser(t)
	var problems pageWatch
	watchPage(t, tab, "tab", &problems)
	browserLogin(t, tab, e)
	poll(t, tab, "row", `document.querySelector('`+rowSel(task.ID)+`') !== null`)
	click(t, tab, rowSel(task.ID))
	poll(t, tab, "approve button", `!document.querySelector("#approve").hidden`)

	shown := problems.expectConfirm(false)
	click(t, tab, "#approve")
	msg := waitConfirm(t, shown)
	for _, want := range []string{"web-15", "52:54:00:15:05:01", "ERASE /dev/nvme0n1"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("confirmation %q does not name %q", msg, want)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if st := taskStatus(t, ctx, e.store, task.ID); st != wire.StatusPendingApproval {
		t.Fatalf("after dismissing the confirmation: %s, want pending_approval", st)
	}

	shown = problems.expectConfirm(true)
	click(t, tab, "#approve")
	waitConfirm(t, shown)
	poll(t, tab, "approved in the list", `document.querySelector('`+rowSel(task.ID)+` .badge').dataset.status === "approved"`)
	if st := taskStatus(t, ctx, e.store, task.ID); st != wire.StatusApproved {
		t.Fatalf("after accepting: %s, want approved", st)
	}
	if p := problems.list(); len(p) > 0 {
		t.Fatalf("page problems:\n%s", strings.Join(p, "\n"))
	}
}

// Issue 15 item 10: a URL per task. Selecting sets #/tasks/{id}, the back
// button returns to the previous selection and then to none, opening the
// URL opens the task, and a new selection starts at the top, focused.
func TestDashboardTaskDeepLink(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newLive(t)
	a := pendingApproval(t, ctx, e.store, "52:54:00:15:0a:01", "deep-a")
	b := pendingApproval(t, ctx, e.store, "52:54:00:15:0a:02", "deep-b")
	tab := newBrowser(t)
	var problems pageWatch
	watchPage(t, tab, "tab", &problems)
	browserLogin(t, tab, e)
	poll(t, tab, "rows", `document.querySelectorAll("#task-scroll .tr").length === 2`)
	if h := eval[string](t, tab, `location.hash`); h != "" {
		t.Fatalf("hash before any selection: %q", h)
	}
	detailIs := func(id string) string {
		return `!document.querySelector("#detail").hidden && document.querySelector("#d-id").textContent === "` + id + `"`
	}

	click(t, tab, rowSel(a.ID))
	poll(t, tab, "a selected", detailIs(a.ID)+` && location.hash === "#/tasks/`+a.ID+`"`)
	poll(t, tab, "detail focused", `document.activeElement === document.querySelector("#detail")`)
	// Scroll the detail down, then select another task: it starts at the top.
	eval[bool](t, tab, `(() => { const d = document.querySelector("#detail"); d.style.maxHeight = "250px"; d.scrollTop = 10000; return d.scrollTop > 0; })()`)
	if top := eval[float64](t, tab, `document.querySelector("#detail").scrollTop`); top <= 0 {
		t.Fatalf("could not scroll the detail (scrollTop %v)", top)
	}
	click(t, tab, rowSel(b.ID))
	poll(t, tab, "b selected", detailIs(b.ID)+` && location.hash === "#/tasks/`+b.ID+`"`)
	poll(t, tab, "b at the top, focused", `document.querySelector("#detail").scrollTop === 0 && document.activeElement === document.querySelector("#detail")`)
	if !eval[bool](t, tab, `!document.querySelector("#approve").hidden && document.querySelector("#approve").getBoundingClientRect().bottom <= innerHeight`) {
		t.Fatal("Approve is not on screen after selecting")
	}

	// Back: a again; back again: nothing selected.
	eval[bool](t, tab, `(history.back(), true)`)
	poll(t, tab, "back to a", detailIs(a.ID)+` && location.hash === "#/tasks/`+a.ID+`"`)
	eval[bool](t, tab, `(history.back(), true)`)
	poll(t, tab, "back to none", `document.querySelector("#detail").hidden && location.hash === ""`)
	eval[bool](t, tab, `(history.forward(), true)`)
	poll(t, tab, "forward to a", detailIs(a.ID))

	// Closing the detail clears the URL.
	click(t, tab, "#d-close")
	poll(t, tab, "closed", `document.querySelector("#detail").hidden && location.hash === ""`)

	// The URL opened directly (a new tab of the signed-in browser).
	tab2, cancel2 := chromedp.NewContext(tab)
	defer cancel2()
	watchPage(t, tab2, "tab2", &problems)
	if err := chromedp.Do(tab2, chromedp.Navigate(e.url+"/#/tasks/"+b.ID)); err != nil {
		t.Fatalf("open deep link: %v", err)
	}
	poll(t, tab2, "deep link opens b", detailIs(b.ID)+` && document.querySelector('`+rowSel(b.ID)+`').getAttribute("aria-selected") === "true"`)
	if p := problems.list(); len(p) > 0 {
		t.Fatalf("page problems:\n%s", strings.Join(p, "\n"))
	}
}

// Issue 15 item 10: bulk select. Three tasks ticked, one Approve, one
// confirmation naming the count: all three approved through the API; the
// select-all box ticks every shown row.
func TestDashboardBulkApprove(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newLive(t)
	var ids []string
	for i := range 3 {
		ids = append(ids, pendingApproval(t, ctx, e.store, fmt.Sprintf("52:54:00:15:0b:%02x", i+1), fmt.Sprintf("bulk-%d", i+1)).ID)
	}
	other, err := e.store.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: "52:54:00:15:0b:10", OSType: "ubuntu", OSVersion: "22.04"})
	if err != nil {
		t.Fatal(err)
	}
	tab := newBrowser(t)
	var problems pageWatch
	watchPage(t, tab, "tab", &problems)
	browserLogin(t, tab, e)
	poll(t, tab, "rows", `document.querySelectorAll("#task-scroll .tr").length === 4`)
	if !eval[bool](t, tab, `document.querySelector("#bulk").hidden`) {
		t.Fatal("bulk bar shown with nothing selected")
	}

	// Select all shown, then clear.
	click(t, tab, "#select-all")
	poll(t, tab, "all 4 ticked", `document.querySelectorAll("#task-scroll .tr .sel:checked").length === 4 && document.querySelector("#bulk-count").textContent === "4 selected"`)
	click(t, tab, "#bulk-clear")
	poll(t, tab, "cleared", `document.querySelectorAll("#task-scroll .tr .sel:checked").length === 0 && document.querySelector("#bulk").hidden && !document.querySelector("#select-all").checked`)

	// Tick the three awaiting approval; ticking does not open the detail.
	for _, id := range ids {
		click(t, tab, rowSel(id)+" .sel")
	}
	poll(t, tab, "3 selected", `document.querySelector("#bulk-count").textContent === "3 selected" && document.querySelector("#select-all").indeterminate`)
	if !eval[bool](t, tab, `document.querySelector("#detail").hidden`) {
		t.Fatal("ticking a row opened its detail")
	}

	// Dismissed: nothing approved.
	shown := problems.expectConfirm(false)
	click(t, tab, "#bulk-approve")
	if msg := waitConfirm(t, shown); !strings.HasPrefix(msg, "Approve 3 tasks?") || !strings.Contains(msg, "bulk-2 (MAC 52:54:00:15:0b:02): ERASE /dev/nvme0n1") {
		t.Fatalf("bulk confirmation %q", msg)
	}
	time.Sleep(300 * time.Millisecond)
	for _, id := range ids {
		if st := taskStatus(t, ctx, e.store, id); st != wire.StatusPendingApproval {
			t.Fatalf("after dismissing: %s %s", id, st)
		}
	}

	// With the pending task ticked too: it is named as left alone.
	click(t, tab, rowSel(other.ID)+" .sel")
	poll(t, tab, "4 selected", `document.querySelector("#bulk-count").textContent === "4 selected"`)
	shown = problems.expectConfirm(true)
	click(t, tab, "#bulk-approve")
	if msg := waitConfirm(t, shown); !strings.HasPrefix(msg, "Approve 3 tasks? (1 other selected task(s) cannot be approved") {
		t.Fatalf("bulk confirmation %q", msg)
	}
	for _, id := range ids {
		poll(t, tab, "approved "+id, `document.querySelector('`+rowSel(id)+` .badge').dataset.status === "approved"`)
		if st := taskStatus(t, ctx, e.store, id); st != wire.StatusApproved {
			t.Fatalf("store: %s %s", id, st)
		}
	}
	if st := taskStatus(t, ctx, e.store, other.ID); st != wire.StatusPending {
		t.Fatalf("the pending task became %s", st)
	}
	poll(t, tab, "approved ones unticked", `document.querySelector("#bulk-count").textContent === "1 selected"`)

	// Bulk cancel of what is left ticked.
	shown = problems.expectConfirm(true)
	click(t, tab, "#bulk-cancel")
	if msg := waitConfirm(t, shown); !strings.HasPrefix(msg, "Cancel 1 task?") {
		t.Fatalf("cancel confirmation %q", msg)
	}
	poll(t, tab, "cancelled", `document.querySelector('`+rowSel(other.ID)+` .badge').dataset.status === "cancelled" && document.querySelector("#bulk").hidden`)
	if p := problems.list(); len(p) > 0 {
		t.Fatalf("page problems:\n%s", strings.Join(p, "\n"))
	}
}

// layoutJS reports, for the Progress and Updated header cells and the
// first row's cells, whatever hides them: the detail panel over them,
// clipping by the table, or another element on top.
const layoutJS = `(() => {
	const d = document.querySelector("#detail").getBoundingClientRect();
	const table = document.querySelector("#task-table").getBoundingClientRect();
	const row = document.querySelector("#task-scroll .tr");
	const cells = [["Progress header", document.querySelector(".thead .c-prog"), 100], ["Updated header", document.querySelector(".thead .c-upd"), 50],
		["Progress cell", row.querySelector(".c-prog"), 100], ["Updated cell", row.querySelector(".c-upd"), 50]];
	const bad = [];
	for (const [name, el, minW] of cells) {
		const r = el.getBoundingClientRect();
		if (r.width < minW) bad.push(name + " is " + r.width + "px wide");
		if (r.right > d.left) bad.push(name + " (right " + r.right + ") runs under the detail (left " + d.left + ")");
		if (r.right > table.right || r.left < table.left) bad.push(name + " is clipped by the table");
		const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
		if (!hit || !(el === hit || el.contains(hit))) bad.push(name + " is covered by " + (hit ? hit.tagName + "#" + hit.id + "." + hit.className : "nothing"));
	}
	return JSON.stringify({bad, detail: [d.left, d.width], table: [table.left, table.right]});
})()`

// Issue 15 item 10: at 1,400x900 the open detail panel does not cover the
// Progress and Updated columns (element geometry, not a screenshot).
func TestDashboardLayoutKeepsProgressVisible(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newLive(t)
	task := pendingApproval(t, ctx, e.store, "52:54:00:15:0c:01", "layout-01")
	tab := newBrowser(t)
	var problems pageWatch
	watchPage(t, tab, "tab", &problems)
	for _, size := range [][2]int64{{1400, 900}, {1280, 800}, {1920, 1080}} {
		if err := chromedp.Do(tab, chromedp.EmulateViewport(size[0], size[1])); err != nil {
			t.Fatal(err)
		}
		if size[0] == 1400 {
			browserLogin(t, tab, e)
			poll(t, tab, "row", `document.querySelector('`+rowSel(task.ID)+`') !== null`)
			click(t, tab, rowSel(task.ID))
			poll(t, tab, "detail open", `!document.querySelector("#detail").hidden`)
		}
		time.Sleep(200 * time.Millisecond)
		if w := eval[int](t, tab, `innerWidth`); w != int(size[0]) {
			t.Fatalf("viewport %d wide, want %d", w, size[0])
		}
		got := eval[string](t, tab, layoutJS)
		if !strings.Contains(got, `"bad":[]`) {
			t.Fatalf("at %dx%d: %s", size[0], size[1], got)
		}
		t.Logf("%dx%d: %s", size[0], size[1], got)
	}
	if p := problems.list(); len(p) > 0 {
		t.Fatalf("page problems:\n%s", strings.Join(p, "\n"))
	}
}

// Issue 15 item 10: throughput and ETA on the progress bar while
// downloading (from successive reports), and a create dialog whose
// placeholders are examples (italic, "e.g."), with "allow missing image".
func TestDashboardThroughputAndCreateDialog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newLive(t)
	withBytes := pendingApproval(t, ctx, e.store, "52:54:00:15:0d:01", "eta-bytes")
	pctOnly := pendingApproval(t, ctx, e.store, "52:54:00:15:0d:02", "eta-pct")
	for _, id := range []string{withBytes.ID, pctOnly.ID} {
		if _, err := e.store.Transition(ctx, id, wire.StatusApproved, "test"); err != nil {
			t.Fatal(err)
		}
	}
	tab := newBrowser(t)
	var problems pageWatch
	watchPage(t, tab, "tab", &problems)
	browserLogin(t, tab, e)
	poll(t, tab, "live", `document.querySelector("#conn").dataset.state === "live" && document.querySelectorAll("#task-scroll .tr").length === 2`)

	report := func(id string, seq int64, pct int, done, total int64) {
		t.Helper()
		if _, err := e.store.ReportProgress(ctx, id, wire.Progress{Seq: seq, Stage: wire.StageDownloading, Percentage: pct,
			Message: "Downloading ubuntu 22.04", BytesDone: done, BytesTotal: total}); err != nil {
			t.Fatal(err)
		}
	}
	ptext := func(id string) string { return `document.querySelector('` + rowSel(id) + ` .ptext').textContent` }
	report(withBytes.ID, 1, 10, 100<<20, 1<<30)
	report(pctOnly.ID, 1, 10, 0, 0)
	poll(t, tab, "first reports shown", ptext(withBytes.ID)+`.includes("10% · downloading") && `+ptext(pctOnly.ID)+`.includes("10% · downloading")`)
	if got := eval[string](t, tab, ptext(withBytes.ID)); strings.Contains(got, "ETA") {
		t.Fatalf("ETA from a single report: %q", got)
	}
	time.Sleep(1100 * time.Millisecond)
	report(withBytes.ID, 2, 30, 300<<20, 1<<30)
	report(pctOnly.ID, 2, 20, 0, 0)
	// ~200 MiB in ~1.1 s: about 190 MB/s, 724 MiB left: about 4 s.
	poll(t, tab, "rate and ETA from bytes", `/\d+(\.\d)? MB\/s, ETA \d\d:\d\d$/.test(`+ptext(withBytes.ID)+`)`)
	poll(t, tab, "ETA from the percentage", `/ETA \d\d:\d\d$/.test(`+ptext(pctOnly.ID)+`) && !`+ptext(pctOnly.ID)+`.includes("MB/s")`)
	t.Logf("with bytes: %q; percent only: %q", eval[string](t, tab, ptext(withBytes.ID)), eval[string](t, tab, ptext(pctOnly.ID)))
	mbps := eval[float64](t, tab, `parseFloat(/([\d.]+) MB\/s/.exec(`+ptext(withBytes.ID)+`)[1])`)
	if mbps < 20 || mbps > 300 { // under load the reports may land further apart
		t.Fatalf("throughput %v MB/s, want about 190", mbps)
	}
	click(t, tab, rowSel(withBytes.ID))
	poll(t, tab, "detail shows the ETA", `document.querySelector("#d-ptext").textContent.includes("MB/s, ETA")`)

	// The create dialog: examples, not values.
	click(t, tab, "#new-task")
	poll(t, tab, "create dialog", `document.querySelector("#create-dialog").open`)
	bad := eval[string](t, tab, `[...document.querySelectorAll("#create-form input[placeholder], #create-form textarea")].map((el) => {
		const ph = getComputedStyle(el, "::placeholder");
		if (!el.placeholder.startsWith("e.g. ")) return el.name + ": placeholder " + JSON.stringify(el.placeholder);
		if (ph.fontStyle !== "italic") return el.name + ": placeholder not italic";
		if (ph.color === getComputedStyle(el).color && ph.opacity === "1") return el.name + ": placeholder styled as a value";
		return "";
	}).filter(Boolean).join("; ")`)
	if bad != "" {
		t.Fatal(bad)
	}
	for sel, v := range map[string]string{`[name="target_mac"]`: "52:54:00:15:0d:03", `[name="region_id"]`: "dc1",
		`[name="os_type"]`: "ubuntu", `[name="os_version"]`: "99.04"} {
		setInput(t, tab, "#create-form "+sel, v, "input")
	}
	click(t, tab, "#create-submit")
	poll(t, tab, "missing image refused", `document.querySelector("#create-error").textContent.includes("no image for ubuntu 99.04")`)
	click(t, tab, `#create-form [name="allow_missing_image"]`)
	click(t, tab, "#create-submit")
	poll(t, tab, "dialog closed", `!document.querySelector("#create-dialog").open`)
	tasks, _, err := e.store.ListTasks(ctx, store.Filter{MAC: "52:54:00:15:0d:03"})
	if err != nil || len(tasks) != 1 || tasks[0].Spec.OSVersion != "99.04" {
		t.Fatalf("created with allow missing image: %+v %v", tasks, err)
	}
	poll(t, tab, "the new task opens", `document.querySelector("#d-id").textContent === "`+tasks[0].ID+`" && location.hash === "#/tasks/`+tasks[0].ID+`"`)
	if p := problems.list(); len(p) > 0 {
		t.Fatalf("page problems:\n%s", strings.Join(p, "\n"))
	}
}
