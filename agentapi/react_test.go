package agentapi

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

// createFor creates a task of region that installs osType/version and
// moves it to pending_approval.
func createFor(t *testing.T, r *testRegion, region, osType, version string) store.Task {
	t.Helper()
	task, err := r.st.CreateTask(context.Background(), store.Spec{RegionID: region, TargetMAC: nextMAC(), OSType: osType, OSVersion: version})
	if err != nil {
		t.Fatal(err)
	}
	advance(t, r, task.ID, wire.StatusPendingApproval)
	return task
}

func approve(t *testing.T, st *store.Store, id string) {
	t.Helper()
	if _, err := st.Transition(context.Background(), id, wire.StatusApproved, "operator"); err != nil {
		t.Fatal(err)
	}
}

// The region's reaction to an approval checks the image once per image
// while its verdict is fresh; a catalog change seen by the watch, or an
// image file that disappears, still fails the tasks approved after it.
func TestApprovalImageCheckFollowsCatalog(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	r := newRegion(t, st, "dc1", nil)
	r.start(t)

	t.Run("entry replaced by an unreadable file", func(t *testing.T) {
		img := addImage(t, st, "rocky", "9", []byte("rocky"))
		a, b := createFor(t, r, "dc1", "rocky", "9"), createFor(t, r, "dc1", "rocky", "9")
		approve(t, st, a.ID) // checked: can be served
		img.Source = filepath.Join(t.TempDir(), "gone.img")
		if err := st.PutImage(ctx, img); err != nil {
			t.Fatal(err)
		}
		approve(t, st, b.ID) // the entry changed since the check: checked again
		if got := waitStatus(t, st, b.ID, wire.StatusFailed); !strings.Contains(got.Status.Reason, "not readable on region dc1") {
			t.Errorf("reason %q", got.Status.Reason)
		}
	})
	t.Run("file removed after a check", func(t *testing.T) {
		img := addImage(t, st, "alma", "9", []byte("alma"))
		a, b := createFor(t, r, "dc1", "alma", "9"), createFor(t, r, "dc1", "alma", "9")
		approve(t, st, a.ID)
		if err := os.Remove(img.Source); err != nil {
			t.Fatal(err)
		}
		approve(t, st, b.ID) // let through on a's verdict while fresh, checked again after: fails either way
		if got := waitStatus(t, st, b.ID, wire.StatusFailed); !strings.Contains(got.Status.Reason, "not readable on region dc1") {
			t.Errorf("reason %q", got.Status.Reason)
		}
	})
	t.Run("entry deleted after a check", func(t *testing.T) {
		addImage(t, st, "debian", "12", []byte("debian"))
		a := createFor(t, r, "dc1", "debian", "12")
		approve(t, st, a.ID)
		if _, err := st.Transition(ctx, a.ID, wire.StatusCancelled, "test"); err != nil {
			t.Fatal(err)
		}
		if _, err := st.DeleteImage(ctx, "debian", "12"); err != nil { // refused while an active task needs it
			t.Fatal(err)
		}
		b := createFor(t, r, "dc1", "debian", "12")
		approve(t, st, b.ID)
		if got := waitStatus(t, st, b.ID, wire.StatusFailed); !strings.HasPrefix(got.Status.Reason, "no image for debian 12") {
			t.Errorf("reason %q", got.Status.Reason)
		}
		if got, err := st.GetTask(ctx, a.ID); err != nil || got.Status.Status != wire.StatusCancelled {
			t.Errorf("cancelled task: %v %v", got.Status, err)
		}
	})
}

// syncerOf is a sync loop's state for r, driven by hand: the test hands
// it the watch's changes when it wants, as a watch that lags behind the
// store would.
func syncerOf(r *testRegion) *syncer {
	return &syncer{r: r.Region, own: map[string]*tracked{}, foreign: map[string]bool{}, images: map[imageRef]*imageVerdict{}}
}

func statusChange(t *testing.T, st *store.Store, id string) store.Change {
	t.Helper()
	task, err := st.GetTask(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return store.Change{Kind: store.KindStatus, TaskID: id, Status: &task.Status}
}

func createdChange(task store.Task) store.Change {
	return store.Change{Kind: store.KindTaskCreated, TaskID: task.ID, Spec: &task.Spec}
}

// An approval that the region sees after the task was cancelled (the
// watch behind the store) does not fail the cancelled task, whatever the
// image; nor does the later check of a verdict it was let through on.
func TestApprovalReactionAfterCancel(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	r := newRegion(t, st, "dc1", nil)
	s := syncerOf(r)

	missing := createFor(t, r, "dc1", "none", "1") // no catalog entry
	approve(t, st, missing.ID)
	approved := statusChange(t, st, missing.ID)
	if _, err := st.Transition(ctx, missing.ID, wire.StatusCancelled, "operator"); err != nil {
		t.Fatal(err)
	}
	s.change(ctx, createdChange(missing))
	s.change(ctx, approved) // the approval, seen after the cancel was stored
	s.change(ctx, statusChange(t, st, missing.ID))
	if got, _ := st.GetTask(ctx, missing.ID); got.Status.Status != wire.StatusCancelled {
		t.Fatalf("cancelled during the approval: now %s (%s)", got.Status.Status, got.Status.Reason)
	}

	// Let through on a fresh verdict, cancelled, then the file goes: the
	// re-check fails only the tasks still approved.
	img := addImage(t, st, "rocky", "9", []byte("rocky"))
	first, kept, cancelled := createFor(t, r, "dc1", "rocky", "9"), createFor(t, r, "dc1", "rocky", "9"), createFor(t, r, "dc1", "rocky", "9")
	for _, task := range []store.Task{first, kept, cancelled} {
		s.change(ctx, createdChange(task))
		approve(t, st, task.ID)
		s.change(ctx, statusChange(t, st, task.ID))
	}
	ref := imageRef{"rocky", "9"}
	v := s.images[ref]
	if v == nil || v.reason != "" || len(v.passed) != 2 {
		t.Fatalf("verdict after three approvals: %+v (want one check, two tasks let through on it)", v)
	}
	if _, err := st.Transition(ctx, cancelled.ID, wire.StatusCancelled, "operator"); err != nil {
		t.Fatal(err)
	}
	s.change(ctx, statusChange(t, st, cancelled.ID))
	if err := os.Remove(img.Source); err != nil {
		t.Fatal(err)
	}
	s.recheckImages(ctx) // still fresh: nothing checked
	if got, _ := st.GetTask(ctx, kept.ID); got.Status.Status != wire.StatusApproved {
		t.Fatalf("checked again while fresh: %s", got.Status.Status)
	}
	v.at = time.Now().Add(-imageCheckFresh)
	s.recheckImages(ctx)
	for id, want := range map[string]wire.Status{first.ID: wire.StatusApproved, kept.ID: wire.StatusFailed, cancelled.ID: wire.StatusCancelled} {
		if got, _ := st.GetTask(ctx, id); got.Status.Status != want {
			t.Errorf("task %s: %s (%s), want %s", id, got.Status.Status, got.Status.Reason, want)
		}
	}
	// The next approval uses the new verdict.
	next := createFor(t, r, "dc1", "rocky", "9")
	s.change(ctx, createdChange(next))
	approve(t, st, next.ID)
	s.change(ctx, statusChange(t, st, next.ID))
	if got, _ := st.GetTask(ctx, next.ID); got.Status.Status != wire.StatusFailed || !strings.Contains(got.Status.Reason, "not readable") {
		t.Errorf("approved after the re-check: %s (%s)", got.Status.Status, got.Status.Reason)
	}
}

// A task change wakes the long-polls of that task and those that wait for
// any task of the region, not the long-polls of the other tasks.
func TestNotifyWakesOnlyThatTask(t *testing.T) {
	t.Parallel()
	r := newRegion(t, newStore(t), "dc1", nil)
	wakeA, releaseA := r.holdWake("a")
	wakeA2, releaseA2 := r.holdWake("a")
	wakeB, releaseB := r.holdWake("b")
	wakeAny, _ := r.holdWake("")
	a, b, anyTask := wakeA(), wakeB(), wakeAny()
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	r.notify("a")
	if !closed(a) || closed(b) || !closed(anyTask) {
		t.Fatalf("notify(a): a %v b %v any %v, want a and any woken", closed(a), closed(b), closed(anyTask))
	}
	a2 := wakeA2()
	if closed(a2) {
		t.Fatal("the next wait of a is already woken")
	}
	r.notify("")
	if !closed(b) || !closed(a2) {
		t.Fatalf("notify(\"\"): b %v a %v, want both woken", closed(b), closed(a2))
	}
	releaseA()
	releaseA2()
	releaseB()
	r.mu.Lock()
	left := len(r.taskWake)
	r.mu.Unlock()
	if left != 0 {
		t.Errorf("%d tasks' wake channels left after every long-poll ended", left)
	}
}

// A catalog change seen by the watch ends the verdict at once: the next
// approval is checked against the new entry, not let through on the old
// verdict while it is fresh.
func TestApprovalCheckAfterCatalogChange(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	ctx := context.Background()
	r := newRegion(t, st, "dc1", nil)
	s := syncerOf(r)
	img := addImage(t, st, "rocky", "9", []byte("rocky"))
	a, b := createFor(t, r, "dc1", "rocky", "9"), createFor(t, r, "dc1", "rocky", "9")
	s.change(ctx, createdChange(a))
	s.change(ctx, createdChange(b))
	approve(t, st, a.ID)
	s.change(ctx, statusChange(t, st, a.ID))
	img.Source = filepath.Join(t.TempDir(), "gone.img")
	if err := st.PutImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	s.change(ctx, store.Change{Kind: store.KindImage, Key: "/images/rocky/9"})
	approve(t, st, b.ID)
	s.change(ctx, statusChange(t, st, b.ID))
	if got, _ := st.GetTask(ctx, b.ID); got.Status.Status != wire.StatusFailed || !strings.Contains(got.Status.Reason, "not readable") {
		t.Errorf("approved after the entry changed: %s (%s)", got.Status.Status, got.Status.Reason)
	}
	if got, _ := st.GetTask(ctx, a.ID); got.Status.Status != wire.StatusApproved {
		t.Errorf("approved and checked before the change: %s (%s)", got.Status.Status, got.Status.Reason)
	}
}

// The approval answer's file check is remembered for imageCheckFresh
// only, and only when the file was servable.
func TestFileChecksRemembersSuccessOnly(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	r := newRegion(t, st, "dc1", nil)
	img := addImage(t, st, "rocky", "9", []byte("rocky"))
	var f fileChecks
	if err := f.check(r.Region, img); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(img.Source); err != nil {
		t.Fatal(err)
	}
	if err := f.check(r.Region, img); err != nil {
		t.Fatalf("within imageCheckFresh of a success: %v", err)
	}
	f.mu.Lock()
	for k := range f.ok {
		f.ok[k] = time.Now().Add(-imageCheckFresh)
	}
	f.mu.Unlock()
	for range 2 { // checked again, and the failure not remembered as a success
		if err := f.check(r.Region, img); err == nil {
			t.Fatal("a removed file found servable once the check is no longer fresh")
		}
	}
	if _, reason, err := r.checkImage(context.Background(), "rocky", "9", nil); err != nil || !strings.Contains(reason, "not readable") {
		t.Errorf("the sync's check (no memory): %q %v", reason, err)
	}
}

// A long-poll held while the task sync follows the watch re-reads its
// task only every pollWhileFollowing; when the sync falls behind, the poll
// goes back to re-reading every PollInterval at once (it is told, it does
// not wake every PollInterval to look): here it is answered long before
// its wait, which is shorter than pollWhileFollowing, would end.
func TestWaitForRereadsOnceSyncFallsBehind(t *testing.T) {
	t.Parallel()
	r := newRegion(t, newStore(t), "dc1", nil)
	r.cfg.PollInterval = 20 * time.Millisecond
	r.following.Store(true)
	reads := make(chan int, 8)
	type result struct {
		gone, ok bool
		err      error
	}
	res := make(chan result, 1)
	go func() {
		n := 0
		gone, ok, err := r.waitFor(t.Context(), pollWhileFollowing-time.Second, "a", func() (bool, error) {
			n++
			reads <- n
			return n >= 3, nil
		})
		res <- result{gone, ok, err}
	}()
	<-reads // the evaluation right after registering
	r.following.Store(false)
	got := <-res
	if got.err != nil || got.gone || !got.ok {
		t.Fatalf("waitFor: gone %v ok %v err %v, want answered by the re-reads after the sync fell behind", got.gone, got.ok, got.err)
	}
	r.following.Store(true) // following again: a fresh state, and a second stop closes its own channel
	r.following.Store(false)
}

// Behind a burst, the held polls together re-read at most
// behindReadsPerPoll tasks per PollInterval: each poll's interval grows
// with the polls held, up to pollWhileFollowing; a few polls keep
// PollInterval.
func TestBehindIntervalBoundsRereads(t *testing.T) {
	every := 250 * time.Millisecond
	for _, c := range []struct {
		held int64
		want time.Duration
	}{
		{0, every}, {1, every}, {behindReadsPerPoll, every},
		{2 * behindReadsPerPoll, 2 * every},
		{5000, pollWhileFollowing},
		{1_000_000, pollWhileFollowing},
	} {
		if got := behindInterval(every, c.held); got != c.want {
			t.Errorf("behindInterval(%v, %d) = %v, want %v", every, c.held, got, c.want)
		}
		if c.held > 0 {
			if perEvery := float64(c.held) * float64(every) / float64(behindInterval(every, c.held)); perEvery > behindReadsPerPoll+0.5 && behindInterval(every, c.held) < pollWhileFollowing {
				t.Errorf("%d held: %.0f re-reads per %v, want at most %d", c.held, perEvery, every, behindReadsPerPoll)
			}
		}
	}
}

// holdWake counts the polls held and release uncounts them.
func TestHoldWakeCountsHeldPolls(t *testing.T) {
	t.Parallel()
	r := newRegion(t, newStore(t), "dc1", nil)
	_, ra := r.holdWake("a")
	_, ra2 := r.holdWake("a")
	_, rb := r.holdWake("b")
	if n := r.held.Load(); n != 3 {
		t.Fatalf("%d held, want 3", n)
	}
	ra()
	ra2()
	rb()
	if n := r.held.Load(); n != 0 {
		t.Fatalf("%d held after release, want 0", n)
	}
}
