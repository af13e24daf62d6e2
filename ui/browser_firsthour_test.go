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
