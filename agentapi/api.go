package agentapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/httpapi"
	"github.com/lpmos/lpmos/internal/netlimit"
	"github.com/lpmos/lpmos/store"
)

// Limits of agent reports.
const (
	maxReasonBytes = 4096
	maxStageBytes  = 64
)

func (r *Region) routes(boot http.Handler) http.Handler {
	m := chi.NewRouter()
	m.Use(r.recoverer)
	m.Use(r.rateLimit)
	m.Use(netlimit.ClearDeadlines(streaming)) // agentapi/guard.go
	m.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		httpapi.WriteError(w, http.StatusNotFound, "not found")
	})
	m.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		httpapi.WriteError(w, http.StatusMethodNotAllowed, "method not allowed")
	})
	m.Get("/healthz", r.healthz)
	m.Post(wire.PathHardware, r.hardware)
	m.Post(wire.PathProgress, r.progress)
	m.Post(wire.PathFailure, r.failure)
	m.Get(wire.PathApproval+"{mac}", r.approval)
	m.Get(wire.PathImages+"{os}/{version}", r.serveImage)
	m.Head(wire.PathImages+"{os}/{version}", r.serveImage)
	if boot != nil {
		m.Handle("/boot/*", boot)
	} else {
		m.Handle("/boot/*", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			httpapi.WriteError(w, http.StatusServiceUnavailable, "network boot is off: this region has no boot dir (kernel and initramfs)")
		}))
	}
	return m
}

func (r *Region) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				r.log.Error("agent API: panic", "method", req.Method, "path", req.URL.Path, "panic", fmt.Sprint(v))
				httpapi.WriteError(w, http.StatusInternalServerError, "internal error")
			}
		}()
		next.ServeHTTP(w, req)
	})
}

func (r *Region) fail(w http.ResponseWriter, req *http.Request, e *httpapi.Error) {
	if e.Code >= 500 {
		r.log.Error("agent API error", "method", req.Method, "path", req.URL.Path, "code", e.Code, "err", e.Msg)
	} else {
		r.log.Info("agent API refused", "method", req.Method, "path", req.URL.Path, "code", e.Code, "err", e.Msg, "remote", req.RemoteAddr)
	}
	httpapi.WriteError(w, e.Code, e.Msg)
}

func needToken(req *http.Request) (string, *httpapi.Error) {
	tok := httpapi.Bearer(req)
	if tok == "" {
		return "", httpapi.Errorf(http.StatusUnauthorized, "missing agent token: send Authorization: Bearer <lpmos_token from the kernel command line>")
	}
	return tok, nil
}

// lookupTask finds the task a report is about, by id or else by MAC, and
// checks that it belongs to this region.
func (r *Region) lookupTask(ctx context.Context, id, mac string) (store.Task, *httpapi.Error) {
	var (
		t   store.Task
		err error
	)
	switch {
	case id != "":
		t, err = r.st.GetTask(ctx, id)
	case mac != "":
		m, perr := store.ParseMAC(mac)
		if perr != nil {
			return store.Task{}, httpapi.Errorf(http.StatusBadRequest, "%v", perr)
		}
		t, err = r.st.TaskByMAC(ctx, m)
	default:
		return store.Task{}, httpapi.Errorf(http.StatusBadRequest, "task_id or mac_address is required")
	}
	if err != nil {
		return store.Task{}, httpapi.StoreError(err)
	}
	if t.Spec.RegionID != r.cfg.RegionID {
		return store.Task{}, httpapi.Errorf(http.StatusNotFound, "task %s belongs to region %s, this is region %s", t.ID, t.Spec.RegionID, r.cfg.RegionID)
	}
	return t, nil
}

// checkToken refuses (403) a token that does not open task t now.
func (r *Region) checkToken(ctx context.Context, t store.Task, token string) *httpapi.Error {
	ok, err := r.st.CheckAgentToken(ctx, t.ID, token)
	if err != nil {
		return httpapi.Errorf(http.StatusServiceUnavailable, "cannot check the agent token: %v", err)
	}
	if !ok {
		return httpapi.Errorf(http.StatusForbidden, "token does not open task %s (another task's token, or its attempt ended or was retried; the task is %s)", t.ID, t.Status.Status)
	}
	return nil
}

func (r *Region) healthz(w http.ResponseWriter, req *http.Request) {
	body := map[string]any{"region": r.cfg.RegionID, "services": r.State()}
	if err := r.st.Health(req.Context()); err != nil {
		body["status"] = "unhealthy"
		body["error"] = err.Error()
		httpapi.WriteJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	body["status"] = "ok"
	httpapi.WriteJSON(w, http.StatusOK, body)
}

// hardware handles POST /api/v1/agent/hardware. With a token it records the
// report of the task (ready -> pending_approval). Without one, a MAC with
// no active task is recorded as a discovered machine when discovery is on.
func (r *Region) hardware(w http.ResponseWriter, req *http.Request) {
	ctx := req.Context()
	var rep wire.HardwareReport
	if e := r.countHardware(decodeHardware(w, req, &rep)); e != nil {
		r.fail(w, req, e)
		return
	}
	token := httpapi.Bearer(req)
	if token == "" {
		r.discover(w, req, rep)
		return
	}
	t, e := r.lookupTask(ctx, rep.TaskID, rep.MACAddress)
	if e == nil {
		e = r.checkToken(ctx, t, token)
	}
	if e != nil {
		r.fail(w, req, e)
		return
	}
	t, err := r.st.SetHardware(ctx, t.ID, rep.Hardware)
	var te *store.TransitionError
	if errors.As(err, &te) && (te.From == wire.StatusApproved || te.From == wire.StatusInstalling || te.From == wire.StatusStalled) {
		// The machine rebooted after approval: the report the operator
		// approved stays; the agent goes on to ask for its install.
		r.log.Info("hardware re-reported after approval, kept the approved report", "task", t.ID, "status", te.From)
		httpapi.WriteJSON(w, http.StatusOK, wire.HardwareResponse{TaskID: t.ID, Status: te.From})
		return
	}
	if err != nil {
		r.fail(w, req, httpapi.StoreError(err))
		return
	}
	r.log.Info("hardware reported", "task", t.ID, "mac", t.Spec.TargetMAC, "status", t.Status.Status)
	httpapi.WriteJSON(w, http.StatusOK, wire.HardwareResponse{TaskID: t.ID, Status: t.Status.Status})
}

func (r *Region) discover(w http.ResponseWriter, req *http.Request, rep wire.HardwareReport) {
	ctx := req.Context()
	mac, err := store.ParseMAC(rep.MACAddress)
	if err != nil {
		r.fail(w, req, httpapi.Errorf(http.StatusBadRequest, "mac_address: %v", err))
		return
	}
	t, err := r.st.TaskByMAC(ctx, mac)
	switch {
	case err == nil && t.Status.Status.Active():
		r.fail(w, req, httpapi.Errorf(http.StatusUnauthorized, "MAC %s has active task %s: send its agent token (Authorization: Bearer <token>)", mac, t.ID))
		return
	case err != nil && !errors.Is(err, store.ErrNotFound):
		r.fail(w, req, httpapi.StoreError(err))
		return
	}
	if !r.cfg.DiscoverUnknown {
		r.fail(w, req, httpapi.Errorf(http.StatusNotFound, "no active task for MAC %s and discovery of unknown machines is off in region %s", mac, r.cfg.RegionID))
		return
	}
	hw := rep.Hardware
	if e := r.recordDiscovered(ctx, mac, &hw); e != nil {
		r.fail(w, req, e)
		return
	}
	r.log.Info("machine discovered", "mac", mac)
	httpapi.WriteJSON(w, http.StatusOK, wire.HardwareResponse{Discovered: true})
}

// progress handles POST /api/v1/agent/progress.
func (r *Region) progress(w http.ResponseWriter, req *http.Request) {
	ctx := req.Context()
	token, e := needToken(req)
	var p wire.Progress
	if e == nil {
		e = httpapi.Decode(w, req, &p)
	}
	if e == nil && (p.Stage == "" || len(p.Stage) > maxStageBytes) {
		e = httpapi.Errorf(http.StatusBadRequest, "stage is required (at most %d bytes)", maxStageBytes)
	}
	if e == nil && len(p.Message) > maxReasonBytes {
		p.Message = strings.ToValidUTF8(p.Message[:maxReasonBytes], "")
	}
	var t store.Task
	if e == nil {
		t, e = r.lookupTask(ctx, p.TaskID, p.MACAddress)
	}
	if e == nil {
		if e = r.checkToken(ctx, t, token); e != nil && e.Code == http.StatusForbidden &&
			t.Status.Status == wire.StatusCompleted && p.Stage == wire.StageCompleted &&
			r.derivedMatches(t.ID, t.Status.Attempt, token) {
			// The agent repeats its final report (the answer was lost):
			// the token died with the task, but it is this attempt's.
			httpapi.WriteJSON(w, http.StatusOK, wire.ProgressResponse{Status: wire.StatusCompleted, Duplicate: true})
			return
		}
	}
	if e != nil {
		r.fail(w, req, e)
		return
	}
	p.TaskID = t.ID
	res, err := r.st.ReportProgress(ctx, t.ID, p)
	if err != nil {
		e := httpapi.StoreError(err)
		var te *store.TransitionError
		if errors.As(err, &te) {
			e.Msg = fmt.Sprintf("task %s is %s: progress is accepted only once it is approved", t.ID, te.From)
		}
		r.fail(w, req, e)
		return
	}
	status := res.Task.Status.Status
	if p.Stage == wire.StageCompleted && p.Percentage == 100 {
		done, err := r.st.Transition(ctx, t.ID, wire.StatusCompleted, "install completed")
		var te *store.TransitionError
		switch {
		case err == nil:
			status = done.Status.Status
			r.log.Info("task completed", "task", t.ID)
		case errors.As(err, &te) && te.From == wire.StatusCompleted:
			status = wire.StatusCompleted
		default:
			r.fail(w, req, httpapi.StoreError(err))
			return
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, wire.ProgressResponse{Status: status, Duplicate: res.Duplicate})
}

// failure handles POST /api/v1/agent/failure.
func (r *Region) failure(w http.ResponseWriter, req *http.Request) {
	ctx := req.Context()
	token, e := needToken(req)
	var f wire.FailureReport
	if e == nil {
		e = httpapi.Decode(w, req, &f)
	}
	if e == nil && strings.TrimSpace(f.Reason) == "" {
		e = httpapi.Errorf(http.StatusBadRequest, "reason is required")
	}
	var t store.Task
	if e == nil {
		t, e = r.lookupTask(ctx, f.TaskID, f.MACAddress)
	}
	if e == nil {
		if e = r.checkToken(ctx, t, token); e != nil && e.Code == http.StatusForbidden &&
			t.Status.Status == wire.StatusFailed && r.derivedMatches(t.ID, t.Status.Attempt, token) {
			httpapi.WriteJSON(w, http.StatusOK, wire.ProgressResponse{Status: wire.StatusFailed, Duplicate: true})
			return
		}
	}
	if e != nil {
		r.fail(w, req, e)
		return
	}
	reason := f.Reason
	if len(reason) > maxReasonBytes {
		reason = strings.ToValidUTF8(reason[:maxReasonBytes], "")
	}
	t, err := r.st.Fail(ctx, t.ID, "agent: "+reason, f.LogLines)
	if err != nil {
		r.fail(w, req, httpapi.StoreError(err))
		return
	}
	r.log.Warn("agent reported failure", "task", t.ID, "reason", reason)
	httpapi.WriteJSON(w, http.StatusOK, wire.ProgressResponse{Status: t.Status.Status})
}

// parseWait reads ?wait= as a Go duration ("30s") or whole seconds ("30").
func (r *Region) parseWait(s string) (time.Duration, *httpapi.Error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		n, nerr := strconv.Atoi(s)
		if nerr != nil {
			return 0, httpapi.Errorf(http.StatusBadRequest, "wait=%q: want a duration like 30s", s)
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 {
		return 0, httpapi.Errorf(http.StatusBadRequest, "wait=%q is negative", s)
	}
	return min(d, r.cfg.MaxWait), nil
}

// waiting reports whether an agent in this status still waits for the
// operator (the long-poll holds the answer until it changes).
func waiting(s wire.Status) bool {
	return s == wire.StatusPending || s == wire.StatusReady || s == wire.StatusPendingApproval
}

// approval handles GET /api/v1/agent/approval/{mac}?wait=30s. While the task
// waits for approval, the answer is held until its status changes or wait
// (at most MaxWait) elapses. A token is required for a MAC with an active
// task; without one, a MAC with no active task gets 404 (a discovered
// machine waiting for an operator to create its task, which it then boots
// again to get its token).
func (r *Region) approval(w http.ResponseWriter, req *http.Request) {
	ctx := req.Context()
	token := httpapi.Bearer(req)
	wait, e := r.parseWait(req.URL.Query().Get("wait"))
	var t store.Task
	if e == nil {
		t, e = r.lookupTask(ctx, "", chi.URLParam(req, "mac"))
	}
	switch {
	case e != nil && e.Code == http.StatusNotFound:
		// A discovered machine asks without a token: nothing for it yet.
		e.Msg = "no task for this machine yet: " + e.Msg
	case e == nil && token == "" && !t.Status.Status.Active():
		e = httpapi.Errorf(http.StatusNotFound, "no active task for MAC %s (last task %s is %s)", t.Spec.TargetMAC, t.ID, t.Status.Status)
	case e == nil && token == "":
		_, e = needToken(req)
	case e == nil:
		e = r.checkToken(ctx, t, token)
	}
	if e != nil {
		r.fail(w, req, e)
		return
	}
	if from, attempt := t.Status.Status, t.Status.Attempt; waiting(from) && wait > 0 {
		deadline := time.NewTimer(wait)
		defer deadline.Stop()
		poll := time.NewTicker(r.cfg.PollInterval)
		defer poll.Stop()
	wait:
		for {
			wake := r.wakeCh()
			select {
			case <-ctx.Done():
				return
			case <-r.done:
				break wait
			case <-deadline.C:
				break wait
			case <-wake:
			case <-poll.C:
			}
			nt, err := r.st.GetTask(ctx, t.ID)
			if err != nil {
				r.fail(w, req, httpapi.StoreError(err))
				return
			}
			t = nt
			if t.Status.Status != from || t.Status.Attempt != attempt {
				break wait
			}
		}
	}
	resp, err := r.approvalAnswer(ctx, t)
	if err != nil {
		r.fail(w, req, httpapi.StoreError(err))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
}

// approvalAnswer describes task t to its agent. An approved task whose
// image cannot be served is failed here with the reason.
func (r *Region) approvalAnswer(ctx context.Context, t store.Task) (wire.ApprovalResponse, error) {
	resp := wire.ApprovalResponse{TaskID: t.ID, Status: t.Status.Status, Reason: t.Status.Reason}
	switch t.Status.Status {
	case wire.StatusApproved, wire.StatusInstalling, wire.StatusStalled:
		spec, reason, err := r.installSpec(ctx, t)
		if err != nil {
			return resp, err
		}
		if reason != "" {
			r.failTask(ctx, t.ID, reason)
			resp.Status, resp.Reason = wire.StatusFailed, reason
			return resp, nil
		}
		resp.Approved, resp.Install, resp.Reason = true, spec, ""
	}
	return resp, nil
}
