package agentapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

// tracked is what the sync loop remembers about one task of its region.
type tracked struct {
	status  wire.Status
	attempt int
	last    time.Time // last sign of life while installing
	image   imageRef  // the spec's image (a task's spec never changes)
	// claimTried: the claim of this pending attempt was answered (claimed,
	// or already claimed or cancelled: the watch brings the change); the
	// sweep retries only a claim that failed.
	claimTried bool
}

// imageRef names a catalog entry.
type imageRef struct{ os, version string }

// syncer is the state of one run of the sync loop; only its goroutine
// touches it.
type syncer struct {
	r       *Region
	own     map[string]*tracked
	foreign map[string]bool // tasks of other regions, so they are not looked up again
	images  map[imageRef]*imageVerdict
}

// imageCheckFresh is how long the region trusts its check of an image's
// file or URL for the tasks approved after it (the catalog entry itself
// is trusted until the watch shows it changed). A burst of approvals then
// costs one check per image and per imageCheckFresh instead of a catalog
// read and a file check per task.
const imageCheckFresh = time.Second

// imageVerdict is the region's last check of one image.
type imageVerdict struct {
	reason string    // why tasks needing it fail; empty: it can be served
	at     time.Time // when the file or URL was checked; zero: the catalog entry changed since
	// passed are the tasks approved after the check that were let through
	// on it: checked again once it is no longer fresh, so that an image
	// file that disappeared meanwhile still fails them.
	passed []string
}

func (v *imageVerdict) fresh(now time.Time) bool {
	return !v.at.IsZero() && now.Sub(v.at) < imageCheckFresh
}

// syncLoop claims the region's pending tasks, follows its tasks through the
// watch (claims retried tasks, checks the image at approval, wakes
// long-polls) and marks silent installs stalled. It lists a snapshot, then
// watches from the snapshot's revision; a compacted watch lists again.
func (r *Region) syncLoop(ctx context.Context) {
	defer r.setState(ServiceTaskSync, StateStopped, nil)
	r.setState(ServiceTaskSync, StateStarting, nil)
	for ctx.Err() == nil {
		s := &syncer{r: r, own: map[string]*tracked{}, foreign: map[string]bool{}, images: map[imageRef]*imageVerdict{}}
		rev, err := s.snapshot(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.setState(ServiceTaskSync, StateFailed, err)
			r.log.Error("task sync: list tasks failed, retrying", "err", err)
			sleepCtx(ctx, time.Second)
			continue
		}
		r.setState(ServiceTaskSync, StateRunning, nil)
		r.synced.Store(true)
		r.following.Store(true)
		r.notify("")
		s.follow(ctx, rev)
		r.following.Store(false)
	}
}

func (s *syncer) snapshot(ctx context.Context) (int64, error) {
	tasks, rev, err := s.r.st.TaskSummaries(ctx) // the store's task index: spec, status, progress (not every key of every task)
	if err != nil {
		return 0, err
	}
	for _, t := range tasks {
		if t.Spec.RegionID != s.r.cfg.RegionID {
			s.foreign[t.ID] = true
			continue
		}
		if !t.Status.Status.Active() {
			continue // ended; a retry is seen through the watch
		}
		tr := &tracked{status: t.Status.Status, attempt: t.Status.Attempt, last: lastActivity(t), image: imageRef{t.Spec.OSType, t.Spec.OSVersion}}
		s.own[t.ID] = tr
		s.react(ctx, t.ID, tr)
	}
	return rev, nil
}

// lastActivity is the newer of the status change and the last progress
// report of the current attempt.
func lastActivity(t store.Task) time.Time {
	last := t.Status.UpdatedAt
	if p := t.Progress; p != nil && p.Attempt == t.Status.Attempt && p.UpdatedAt.After(last) {
		last = p.UpdatedAt
	}
	return last
}

// stallTick is how often installing tasks are checked.
func (r *Region) stallTick() time.Duration {
	d := r.cfg.StallAfter / 4
	return min(max(d, 20*time.Millisecond), 5*time.Second)
}

func (s *syncer) follow(ctx context.Context, rev int64) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := s.r.st.WatchStored(wctx, rev+1, store.KindTaskCreated, store.KindTaskDeleted, store.KindStatus, store.KindProgress, // the stall check needs the stored reports only (written at least every stall-after/4)
		store.KindImage) // the image check's catalog entries
	tick := time.NewTicker(s.r.stallTick())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case c, ok := <-ch:
			if !ok || c.Kind == store.KindWatchRestart {
				if ctx.Err() == nil {
					s.r.log.Warn("task sync: watch ended, listing again")
				}
				return
			}
			s.change(ctx, c)
			// Behind a burst (claims are written one by one here), the
			// wake-ups come late: the held long-polls then re-read their
			// task every PollInterval again.
			s.r.following.Store(len(ch) < cap(ch)/4)
		case <-tick.C:
			s.sweep(ctx)
			s.recheckImages(ctx)
		}
	}
}

// isOwn classifies a task, reading its spec once if it was not seen yet.
func (s *syncer) isOwn(ctx context.Context, id string) (*tracked, bool) {
	if tr, ok := s.own[id]; ok {
		return tr, true
	}
	if s.foreign[id] {
		return nil, false
	}
	t, err := s.r.st.GetTask(ctx, id)
	if err != nil {
		return nil, false // not complete yet, or gone; a later change asks again
	}
	if t.Spec.RegionID != s.r.cfg.RegionID {
		s.foreign[id] = true
		return nil, false
	}
	tr := &tracked{status: t.Status.Status, attempt: t.Status.Attempt, last: lastActivity(t), image: imageRef{t.Spec.OSType, t.Spec.OSVersion}}
	s.own[id] = tr
	return tr, true
}

func (s *syncer) change(ctx context.Context, c store.Change) {
	switch c.Kind {
	case store.KindTaskCreated:
		if c.Spec.RegionID != s.r.cfg.RegionID {
			s.foreign[c.TaskID] = true
			return
		}
		if _, ok := s.own[c.TaskID]; !ok {
			s.own[c.TaskID] = &tracked{last: time.Now(), image: imageRef{c.Spec.OSType, c.Spec.OSVersion}} // its status follows in the same revision
		}
	case store.KindTaskDeleted:
		delete(s.own, c.TaskID)
		delete(s.foreign, c.TaskID)
	case store.KindStatus:
		tr, ok := s.isOwn(ctx, c.TaskID)
		if !ok {
			return
		}
		if c.Status.Status != tr.status || c.Status.Attempt != tr.attempt {
			tr.last = time.Now()
		}
		tr.status, tr.attempt = c.Status.Status, c.Status.Attempt
		s.react(ctx, c.TaskID, tr)
		if !tr.status.Active() {
			delete(s.own, c.TaskID) // a retry brings it back through isOwn
		}
		s.r.notify(c.TaskID)
	case store.KindProgress:
		if tr, ok := s.own[c.TaskID]; ok {
			tr.last = time.Now()
		}
	case store.KindImage:
		// A catalog entry was added, replaced or removed: what was
		// checked of it no longer holds (the tasks let through on it are
		// checked again at the next tick; the next approval checks anew).
		for _, v := range s.images {
			v.at = time.Time{}
		}
	}
}

// react does what the region owes a task in its current status.
func (s *syncer) react(ctx context.Context, id string, tr *tracked) {
	switch tr.status {
	case wire.StatusPending:
		tr.claimTried = s.r.claim(ctx, id, tr.attempt)
	case wire.StatusApproved:
		s.checkApproved(ctx, id, tr)
	}
}

// checkApproved fails an approved task whose image this region cannot
// serve. The task's image comes from the spec the watch or the snapshot
// delivered, the verdict from the last check of that image while it is
// fresh and its catalog entry unchanged (the watch delivers a catalog
// change before any approval stored after it); a task let through on a
// verdict made before its approval is checked again once the verdict is
// no longer fresh (recheckImages). A task that leaves approved meanwhile
// (cancelled, installing) is left alone, as the store's guarded Fail
// would leave a task that already ended. The agent's own approval answer
// checks the image again in any case (approvalAnswer).
func (s *syncer) checkApproved(ctx context.Context, id string, tr *tracked) {
	if tr.image.os == "" { // not known (cannot happen: the spec comes first); read it
		t, err := s.r.st.GetTask(ctx, id)
		if err != nil || t.Status.Status != wire.StatusApproved {
			return
		}
		tr.image = imageRef{t.Spec.OSType, t.Spec.OSVersion}
	}
	if v := s.images[tr.image]; v != nil && v.fresh(time.Now()) {
		if v.reason != "" {
			s.r.failTask(ctx, id, v.reason)
			return
		}
		v.passed = append(v.passed, id)
		return
	}
	if v := s.checkImage(ctx, tr.image); v != nil && v.reason != "" {
		s.r.failTask(ctx, id, v.reason)
	}
}

// checkImage checks ref now and fails the tasks let through on its
// previous verdict that are still approved when it cannot be served. On
// a store error the previous verdict (no longer fresh) is kept, with its
// tasks, for the next try, and nil returned.
func (s *syncer) checkImage(ctx context.Context, ref imageRef) *imageVerdict {
	_, reason, err := s.r.checkImage(ctx, ref.os, ref.version, nil) // the file itself, not a recent answer's check of it
	if err != nil {
		s.r.log.Warn("image check: read the catalog", "os", ref.os, "version", ref.version, "err", err)
		if v := s.images[ref]; v != nil {
			v.at = time.Time{}
		}
		return nil
	}
	if old := s.images[ref]; old != nil && reason != "" {
		for _, id := range old.passed {
			if tr, ok := s.own[id]; ok && tr.status == wire.StatusApproved {
				s.r.failTask(ctx, id, reason)
			}
		}
	}
	v := &imageVerdict{reason: reason, at: time.Now()}
	s.images[ref] = v
	return v
}

// recheckImages checks again the images whose verdict let tasks through
// and is no longer fresh, and forgets the others that are not.
func (s *syncer) recheckImages(ctx context.Context) {
	now := time.Now()
	for ref, v := range s.images {
		if v.fresh(now) {
			continue
		}
		if len(v.passed) == 0 {
			delete(s.images, ref)
			continue
		}
		s.checkImage(ctx, ref)
	}
}

// sweep retries claims that failed and marks silent installs stalled.
func (s *syncer) sweep(ctx context.Context) {
	now := time.Now()
	for id, tr := range s.own {
		switch tr.status {
		case wire.StatusPending:
			if !tr.claimTried && now.Sub(tr.last) > time.Second { // the watch already tried once
				tr.last = now
				tr.claimTried = s.r.claim(ctx, id, tr.attempt)
			}
		case wire.StatusInstalling:
			if now.Sub(tr.last) <= s.r.cfg.StallAfter {
				continue
			}
			t, err := s.r.st.GetTask(ctx, id)
			if err != nil {
				continue
			}
			// The stored report, or one this region answered and has not
			// written yet (coalesced, or etcd's writes lag).
			last := lastActivity(t)
			if a := s.r.fast.pp.LastAccepted(id); a.After(last) {
				last = a
			}
			if t.Status.Status != wire.StatusInstalling || now.Sub(last) <= s.r.cfg.StallAfter {
				tr.status, tr.last = t.Status.Status, last
				continue
			}
			silent := now.Sub(last).Round(time.Second)
			reason := fmt.Sprintf("no progress report from the agent for %s", silent)
			if _, err := s.r.st.Transition(ctx, id, wire.StatusStalled, reason); err != nil {
				if !errors.Is(err, store.ErrConflict) {
					s.r.log.Warn("stall: transition failed", "task", id, "err", err)
				}
				continue
			}
			tr.status = wire.StatusStalled
			s.r.log.Warn("task stalled", "task", id, "silent_for", silent)
			// A report that raced the transition (stored after our read,
			// before the stall) must not leave the task stalled.
			if after, err := s.r.st.GetTask(ctx, id); err == nil && after.Status.Status == wire.StatusStalled &&
				after.Progress != nil && t.Progress != nil && after.Progress.Seq != t.Progress.Seq {
				if _, err := s.r.st.Transition(ctx, id, wire.StatusInstalling, "agent reported during the stall check"); err == nil {
					tr.status, tr.last = wire.StatusInstalling, now
				}
			}
		}
	}
}

// claim moves a pending task of this region to ready. Losing the race
// (already claimed, cancelled) is not an error. It reports whether the
// claim was decided (false: it failed and is worth a retry).
func (r *Region) claim(ctx context.Context, id string, attempt int) bool {
	_, err := r.st.ClaimTask(ctx, id, "")
	var moved *store.TransitionError
	switch {
	case err == nil:
		r.log.Info("task claimed", "task", id, "attempt", attempt)
	case errors.As(err, &moved), errors.Is(err, store.ErrNotFound): // no longer pending, or gone
		r.log.Debug("claim skipped", "task", id, "err", err)
	case errors.Is(err, store.ErrConflict): // contention: the task may still be pending
		r.log.Debug("claim lost a race, will retry", "task", id, "err", err)
		return false
	default:
		r.log.Warn("claim failed, will retry", "task", id, "err", err)
		return false
	}
	return true
}

// failTask fails a task with a reason; a task that already left its active
// states is left alone.
func (r *Region) failTask(ctx context.Context, id, reason string) {
	if _, err := r.st.Fail(ctx, id, reason, nil); err != nil {
		if !errors.Is(err, store.ErrConflict) {
			r.log.Warn("fail task", "task", id, "reason", reason, "err", err)
		}
		return
	}
	r.log.Warn("task failed by region", "task", id, "reason", reason)
}
