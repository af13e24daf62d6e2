package agentapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/httpapi"
	"github.com/lpmos/lpmos/store"
)

// MaxSeqSkew is how far a progress seq (unix microseconds on the agent's
// clock) may run ahead of the server clock.
const MaxSeqSkew = 10 * time.Minute

// authError maps a store error about a credential to its answer: ErrAuth
// is 401 with the store's explanation.
func authError(err error) *httpapi.Error {
	switch {
	case errors.Is(err, store.ErrAuth):
		return httpapi.Errorf(http.StatusUnauthorized, "%v", err)
	case errors.Is(err, store.ErrNotFound):
		return httpapi.Errorf(http.StatusUnauthorized, "token refused: %v (deleted?)", err)
	}
	return httpapi.StoreError(err)
}

// session handles POST /api/v1/agent/session: the agent's first call
// exchanges the boot token of its iPXE script (Bearer) for a session.
func (r *Region) session(w http.ResponseWriter, req *http.Request) {
	ctx := req.Context()
	var body wire.SessionRequest
	if e := httpapi.Decode(w, req, &body); e != nil {
		r.fail(w, req, e)
		return
	}
	tok := httpapi.Bearer(req)
	kind, id, ok := store.ParseAgentToken(tok)
	if tok == "" || !ok || kind != store.TokenBoot {
		r.fail(w, req, httpapi.Errorf(http.StatusUnauthorized, "missing or malformed boot token: send Authorization: Bearer <lpmos_token from the kernel command line>"))
		return
	}
	if body.TaskID != "" && body.TaskID != id {
		r.fail(w, req, httpapi.Errorf(http.StatusBadRequest, "task_id %s is not the task of this boot token (%s)", body.TaskID, id))
		return
	}
	t, err := r.st.GetTask(ctx, id)
	if err != nil {
		r.fail(w, req, authError(err))
		return
	}
	if e := r.ownTask(t, body.MACAddress); e != nil {
		r.fail(w, req, e)
		return
	}
	sess, t, err := r.st.RedeemBootToken(ctx, id, tok, req.RemoteAddr)
	if err != nil {
		r.fail(w, req, authError(err))
		return
	}
	r.log.Info("agent session opened", "task", id, "remote", req.RemoteAddr)
	httpapi.WriteJSON(w, http.StatusOK, wire.SessionResponse{SessionToken: sess, TaskID: t.ID, Status: t.Status.Status})
}

// ownTask checks that t belongs to this region and, when mac is given,
// to that MAC.
func (r *Region) ownTask(t store.Task, mac string) *httpapi.Error {
	if t.Spec.RegionID != r.cfg.RegionID {
		return httpapi.Errorf(http.StatusNotFound, "task %s belongs to region %s, this is region %s", t.ID, t.Spec.RegionID, r.cfg.RegionID)
	}
	if mac == "" {
		return nil
	}
	m, err := store.ParseMAC(mac)
	if err != nil {
		return httpapi.Errorf(http.StatusBadRequest, "mac_address: %v", err)
	}
	if m != t.Spec.TargetMAC {
		return httpapi.Errorf(http.StatusForbidden, "task %s is for MAC %s, not %s", t.ID, t.Spec.TargetMAC, m)
	}
	return nil
}

// noBearer refuses (401) a request without any bearer token before its
// body is read.
func noBearer(req *http.Request) *httpapi.Error {
	if httpapi.Bearer(req) == "" {
		return httpapi.Errorf(http.StatusUnauthorized, "missing agent session token: send Authorization: Bearer <session_token from POST %s>", wire.PathSession)
	}
	return nil
}

// taskSession checks the bearer session token of req and returns its task
// and session. id and mac, when given, must be the session's task and its
// MAC. The session may be of an earlier attempt or of an ended task; see
// current.
func (r *Region) taskSession(ctx context.Context, req *http.Request, id, mac string) (store.Task, store.Session, *httpapi.Error) {
	tok := httpapi.Bearer(req)
	kind, subj, ok := store.ParseAgentToken(tok)
	switch {
	case tok == "":
		return store.Task{}, store.Session{}, httpapi.Errorf(http.StatusUnauthorized, "missing agent session token: send Authorization: Bearer <session_token from POST %s>", wire.PathSession)
	case !ok:
		return store.Task{}, store.Session{}, httpapi.Errorf(http.StatusUnauthorized, "not an lpmos agent token")
	case kind == store.TokenBoot:
		return store.Task{}, store.Session{}, httpapi.Errorf(http.StatusUnauthorized, "this is a boot token (lpmos_token): exchange it once at POST %s for a session token", wire.PathSession)
	case kind == store.TokenDiscovery:
		return store.Task{}, store.Session{}, httpapi.Errorf(http.StatusUnauthorized, "a discovery session opens no task: the approval poll hands over the task's session")
	case id != "" && id != subj:
		return store.Task{}, store.Session{}, httpapi.Errorf(http.StatusForbidden, "this session belongs to task %s, not %s", subj, id)
	}
	sess, t, err := r.st.CheckSession(ctx, subj, tok)
	if err != nil {
		return t, sess, authError(err)
	}
	if e := r.ownTask(t, mac); e != nil {
		return t, sess, e
	}
	return t, sess, nil
}

// current refuses (401) a session of an earlier attempt of its task: only
// the approval poll still accepts it, to hand over the new attempt.
func current(t store.Task, sess store.Session) *httpapi.Error {
	if sess.Attempt != t.Status.Attempt {
		return httpapi.Errorf(http.StatusUnauthorized, "this session is of attempt %d of task %s, which is now at attempt %d (retried): the approval poll hands over a session for it",
			sess.Attempt, t.ID, t.Status.Attempt)
	}
	return nil
}

// holds reports whether the approval long-poll of a live agent holding a
// session of t's current attempt waits for a change: before approval, and
// after the task failed or was cancelled (a retry is handed over).
func holds(t store.Task, sess store.Session) bool {
	if sess.Attempt != t.Status.Attempt {
		return false
	}
	s := t.Status.Status
	return waiting(s) || s == wire.StatusFailed || s == wire.StatusCancelled
}

// approval handles GET /api/v1/agent/approval/{mac}?wait=30s with a task
// session (or a discovery session, see discoveryPoll). While the task
// waits for the operator, or has failed and may be retried, the answer is
// held until its status changes or wait (at most MaxWait) elapses. A
// session of an ended attempt is handed a session of the new attempt.
func (r *Region) approval(w http.ResponseWriter, req *http.Request) {
	ctx := req.Context()
	wait, e := r.parseWait(req.URL.Query().Get("wait"))
	if e != nil {
		r.fail(w, req, e)
		return
	}
	mac, err := store.ParseMAC(chi.URLParam(req, "mac"))
	if err != nil {
		r.fail(w, req, httpapi.Errorf(http.StatusBadRequest, "%v", err))
		return
	}
	if tok := httpapi.Bearer(req); tok != "" {
		if kind, _, _ := store.ParseAgentToken(tok); kind == store.TokenDiscovery {
			r.discoveryPoll(w, req, mac, tok, wait)
			return
		}
	}
	t, sess, e := r.taskSession(ctx, req, "", mac)
	if e != nil {
		r.fail(w, req, e)
		return
	}
	// An ended task's agent may also be handed a new task created for its
	// MAC (instead of a retry).
	var next *store.Task
	newTask := func() error {
		if t.Status.Status.Active() {
			return nil
		}
		nt, err := r.st.TaskByMAC(ctx, mac)
		if err == nil && nt.ID != t.ID && nt.Spec.RegionID == r.cfg.RegionID && nt.Status.Status.Active() {
			next = &nt
		}
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	}
	if err := newTask(); err != nil {
		r.fail(w, req, httpapi.StoreError(err))
		return
	}
	if next == nil && holds(t, sess) && wait > 0 {
		from, attempt := t.Status.Status, t.Status.Attempt
		var only string // an active task's poll waits for a change of it; an ended one's for a new task of its MAC
		if t.Status.Status.Active() {
			only = t.ID
		}
		gone, _, err := r.waitFor(ctx, wait, only, func() (bool, error) {
			nt, err := r.st.GetTask(ctx, t.ID)
			if err != nil {
				return false, err
			}
			t = nt
			if t.Status.Status != from || t.Status.Attempt != attempt {
				return true, nil
			}
			err = newTask()
			return next != nil, err
		})
		if err != nil {
			r.fail(w, req, httpapi.StoreError(err))
			return
		}
		if gone {
			return // the client went away
		}
	}
	if next != nil {
		resp, e := r.adopt(ctx, req, *next, mac)
		if e != nil {
			r.fail(w, req, e)
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, resp)
		return
	}
	if sess.Attempt != t.Status.Attempt && t.Status.Status.Active() {
		resp, e := r.handOverRetry(ctx, req, t, sess)
		if e != nil {
			r.fail(w, req, e)
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, resp)
		return
	}
	resp, err := r.approvalAnswer(ctx, t)
	if err != nil {
		r.fail(w, req, httpapi.StoreError(err))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
}

// pollWhileFollowing is how often a held long-poll re-reads its task
// while the task sync follows the watch (its wake-ups carry every change;
// this is a safety net): at 5,000 agents waiting for their approval,
// re-reading every PollInterval was 20,000 task reads a second.
const pollWhileFollowing = 5 * time.Second

// behindReadsPerPoll bounds the re-reads of the held long-polls while the
// sync is behind: every poll re-reads every PollInterval while fewer than
// this many are held, and all of them together re-read at most this many
// tasks per PollInterval when more are (each poll's interval grows with
// the count, up to pollWhileFollowing). At 5,000 held polls behind an
// approval burst, a re-read every 250 ms each was 20,000 full task reads a
// second: they kept the sync behind, the burst took 4 minutes and the
// polls ran into their wait (issue 14, wave9 in BENCHMARKS.md).
const behindReadsPerPoll = 250

// behindInterval is a held poll's re-read interval while the sync is
// behind, with held polls held.
func behindInterval(every time.Duration, held int64) time.Duration {
	if held <= behindReadsPerPoll {
		return every
	}
	return min(pollWhileFollowing, time.Duration(int64(every)*held/behindReadsPerPoll))
}

// waitFor re-evaluates done on every change of task id (every task change
// of the region when id is empty) until it is true or d elapses, and
// every PollInterval when the task sync is not following the watch
// (pollWhileFollowing when it is). It returns done's last answer; gone is
// true when the request's context ended.
func (r *Region) waitFor(ctx context.Context, d time.Duration, id string, done func() (bool, error)) (gone, ok bool, err error) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	wakeCh, release := r.holdWake(id)
	defer release()
	// A change between the caller's read and the registration above woke
	// nobody: evaluate once now that a change wakes this poll.
	wake := wakeCh()
	if ok, err := done(); err != nil || ok {
		return false, ok, err
	}
	last := time.Now()
	// One timer, set to the next re-read: PollInterval after the last one
	// (longer with many polls held: behindInterval), or pollWhileFollowing
	// while the sync follows (and at once back to the shorter one when it
	// falls behind: behind closes).
	poll := time.NewTimer(r.cfg.PollInterval)
	defer poll.Stop()
	for {
		following, behind := r.following.state()
		every := behindInterval(r.cfg.PollInterval, r.held.Load())
		if following {
			every = pollWhileFollowing
		}
		poll.Reset(max(0, every-time.Since(last)))
		select {
		case <-ctx.Done():
			return true, false, nil
		case <-r.done:
			return false, false, nil
		case <-deadline.C:
			return false, false, nil
		case <-behind: // the sync fell behind: re-read every PollInterval again
			continue
		case <-wake:
		case <-poll.C:
		}
		wake = wakeCh()
		last = time.Now()
		ok, err := done()
		if err != nil || ok {
			return false, ok, err
		}
	}
}

// handOverRetry gives the live agent of an ended attempt (its session
// still valid) a session of the task's new attempt, claiming the task if
// the region has not yet. The agent reports its hardware with it.
func (r *Region) handOverRetry(ctx context.Context, req *http.Request, t store.Task, sess store.Session) (wire.ApprovalResponse, *httpapi.Error) {
	if t.Status.Status == wire.StatusPending {
		if _, err := r.st.ClaimTask(ctx, t.ID, ""); err != nil && !errors.Is(err, store.ErrConflict) {
			return wire.ApprovalResponse{}, httpapi.StoreError(err)
		}
	}
	why := fmt.Sprintf("the live agent of attempt %d picked up attempt %d", sess.Attempt, t.Status.Attempt)
	tok, t, err := r.st.IssueSession(ctx, t.ID, sess.Rev, req.RemoteAddr, "retry", why)
	if err != nil {
		return wire.ApprovalResponse{}, authError(err)
	}
	r.log.Info("retried task handed to its live agent", "task", t.ID, "attempt", t.Status.Attempt, "remote", req.RemoteAddr)
	return wire.ApprovalResponse{TaskID: t.ID, Status: t.Status.Status, SessionToken: tok}, nil
}

// discoveryPoll is the approval long-poll of a discovered machine's agent
// (discovery session of mac): it is held until a task of this region is
// active for mac, then the task is handed over; without one it ends in 404.
func (r *Region) discoveryPoll(w http.ResponseWriter, req *http.Request, mac, tok string, wait time.Duration) {
	ctx := req.Context()
	if _, err := r.st.CheckDiscoverySession(ctx, mac, tok); err != nil {
		r.fail(w, req, authError(err))
		return
	}
	var found store.Task
	lookup := func() (bool, error) {
		t, err := r.st.TaskByMAC(ctx, mac)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return false, nil
		case err != nil:
			return false, err
		}
		found = t
		return t.Spec.RegionID == r.cfg.RegionID && t.Status.Status.Active(), nil
	}
	ok, err := lookup()
	if !ok && err == nil && wait > 0 {
		var gone bool
		gone, ok, err = r.waitFor(ctx, wait, "", lookup)
		if gone {
			return
		}
	}
	if err != nil {
		r.fail(w, req, httpapi.StoreError(err))
		return
	}
	if !ok {
		r.fail(w, req, httpapi.Errorf(http.StatusNotFound, "no task for MAC %s yet: waiting for an operator to create one", mac))
		return
	}
	// The session may have been replaced while the poll was held.
	if _, err := r.st.CheckDiscoverySession(ctx, mac, tok); err != nil {
		r.fail(w, req, authError(err))
		return
	}
	resp, e := r.adopt(ctx, req, found, mac)
	if e != nil {
		r.fail(w, req, e)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
}

// adopt hands task t to the waiting agent of mac (discovered, or of an
// ended task of the MAC): the task is claimed,
// gets the hardware already known from /machines/{mac} (-> pending_approval
// at once), the machine leaves the discovered list, and the agent gets a
// session of the task.
func (r *Region) adopt(ctx context.Context, req *http.Request, t store.Task, mac string) (wire.ApprovalResponse, *httpapi.Error) {
	if t.Status.Status == wire.StatusPending {
		if _, err := r.st.ClaimTask(ctx, t.ID, ""); err != nil && !errors.Is(err, store.ErrConflict) {
			return wire.ApprovalResponse{}, httpapi.StoreError(err)
		}
	}
	tok, t, err := r.st.IssueSession(ctx, t.ID, -1, req.RemoteAddr, "discovery", "the waiting agent of "+mac+" picked up the task")
	if err != nil {
		return wire.ApprovalResponse{}, authError(err)
	}
	// The machine leaves the discovered list before the task moves to
	// pending_approval, so nobody watching sees the task waiting for
	// approval while its machine is still listed as discovered.
	m, merr := r.st.GetMachine(ctx, mac)
	if err := r.st.DeleteMachine(ctx, mac); err != nil && !errors.Is(err, store.ErrNotFound) {
		r.log.Warn("hand-over: removing the discovered machine", "mac", mac, "err", err)
	}
	if err := r.st.DeleteDiscoverySession(ctx, mac); err != nil {
		r.log.Warn("hand-over: removing the discovery session", "mac", mac, "err", err)
	}
	if t.Status.Status == wire.StatusReady && merr == nil && m.Hardware != nil {
		// On failure the agent's own hardware report moves the task on.
		if nt, err := r.st.SetHardware(ctx, t.ID, *m.Hardware); err == nil {
			t = nt
		} else {
			r.log.Warn("hand-over: recording the discovered hardware", "task", t.ID, "err", err)
		}
	}
	r.log.Info("task handed to the discovered agent", "task", t.ID, "mac", mac, "status", t.Status.Status, "remote", req.RemoteAddr)
	return wire.ApprovalResponse{TaskID: t.ID, Status: t.Status.Status, SessionToken: tok}, nil
}

// imageAuth guards the image routes: the bearer must be the current
// session of an approved, installing or stalled task of this region whose
// os/version is the image asked for.
func (r *Region) imageAuth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		t, sess, e := r.taskSession(req.Context(), req, "", "")
		if e == nil {
			e = current(t, sess)
		}
		if e == nil {
			switch t.Status.Status {
			case wire.StatusApproved, wire.StatusInstalling, wire.StatusStalled:
			default:
				e = httpapi.Errorf(http.StatusForbidden, "task %s is %s: images are served only to the agent of an approved task", t.ID, t.Status.Status)
			}
		}
		if os, ver := chi.URLParam(req, "os"), chi.URLParam(req, "version"); e == nil && (os != t.Spec.OSType || ver != t.Spec.OSVersion) {
			e = httpapi.Errorf(http.StatusForbidden, "task %s installs %s %s, not %s %s", t.ID, t.Spec.OSType, t.Spec.OSVersion, os, ver)
		}
		if e != nil {
			r.fail(w, req, e)
			return
		}
		next(w, req)
	}
}
