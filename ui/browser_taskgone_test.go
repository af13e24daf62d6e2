package ui_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/lpmos/lpmos/agent/wire"
)

// Issue 15 items 9 and 10: the open task is deleted (task rm, DELETE
// ?purge=true): its detail closes and the URL goes back to the list, so
// neither a reload nor back lands on it; a deep link to a deleted (or
// never existing) task says "Task not found" instead of a blank panel.
func TestDashboardOpenTaskDeleted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newLive(t)
	gone := pendingApproval(t, ctx, e.store, "52:54:00:15:0f:01", "gone-01")
	kept := pendingApproval(t, ctx, e.store, "52:54:00:15:0f:02", "kept-01")
	if _, err := e.store.Transition(ctx, gone.ID, wire.StatusCancelled, "test"); err != nil {
		t.Fatal(err)
	}
	tab := newBrowser(t)
	var problems pageWatch
	watchPage(t, tab, "tab", &problems)
	browserLogin(t, tab, e)
	poll(t, tab, "rows", `document.querySelectorAll("#task-scroll .tr").length === 2`)
	click(t, tab, rowSel(gone.ID))
	poll(t, tab, "detail open", `!document.querySelector("#detail").hidden && location.hash === "#/tasks/`+gone.ID+`"`)

	resp, body := e.request(t, "DELETE", "/api/v1/tasks/"+gone.ID+"?purge=true", "", http.Header{"Authorization": {"Bearer " + e.token}})
	if resp.StatusCode != 200 {
		t.Fatalf("delete: %d %s", resp.StatusCode, body)
	}
	poll(t, tab, "detail closed, URL back to the list", `document.querySelector("#detail").hidden && location.hash === "" && document.querySelector('`+rowSel(gone.ID)+`') === null`)
	poll(t, tab, "the page says why", `document.querySelector("#toasts").textContent.includes("Task `+gone.ID+` was deleted")`)
	eval[bool](t, tab, `(history.back(), true)`)
	poll(t, tab, "back does not reopen it", `location.hash === "" && document.querySelector("#detail").hidden`)

	// A deep link to the deleted task, and to one that never existed.
	missing := `!document.querySelector("#detail").hidden && document.querySelector("#d-title").textContent === "Task not found" &&
		getComputedStyle(document.querySelector("#detail .d-missing")).display !== "none" &&
		[...document.querySelectorAll("#detail > :not(.d-head, .d-missing)")].every((el) => getComputedStyle(el).display === "none")`
	for _, id := range []string{gone.ID, "00000000-0000-0000-0000-000000000000"} {
		if err := chromedp.Do(tab, chromedp.Navigate(e.url+"/#/tasks/"+id), chromedp.Reload()); err != nil {
			t.Fatal(err)
		}
		poll(t, tab, "not found for "+id, missing+` && document.querySelector("#d-id").textContent === "`+id+`"`)
	}
	if txt := eval[string](t, tab, `document.querySelector("#detail").innerText`); !strings.Contains(txt, "deleted, or the link is wrong") || strings.Contains(txt, "Approve") {
		t.Fatalf("not-found panel: %q", txt)
	}
	click(t, tab, "#detail .d-missing a")
	poll(t, tab, "back to the list", `document.querySelector("#detail").hidden && !location.hash.startsWith("#/tasks/")`)

	// Opening a real task after that shows the whole detail again.
	if err := chromedp.Do(tab, chromedp.Navigate(e.url+"/#/tasks/"+gone.ID)); err != nil {
		t.Fatal(err)
	}
	poll(t, tab, "not found again", missing)
	click(t, tab, rowSel(kept.ID))
	poll(t, tab, "kept opens whole", `document.querySelector("#d-id").textContent === "`+kept.ID+`" && !("missing" in document.querySelector("#detail").dataset) &&
		getComputedStyle(document.querySelector("#detail .d-missing")).display === "none" && !document.querySelector("#approve").hidden && document.querySelector("#d-title").textContent === "kept-01"`)
	if p := problems.list(); len(p) > 0 {
		t.Fatalf("page problems:\n%s", strings.Join(p, "\n"))
	}
}
