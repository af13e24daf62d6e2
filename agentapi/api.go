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
	m.Use(r.metrics.http.Middleware) // agentapi/metrics.go
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
	m.Post(wire.PathSession, r.session)
	m.Post(wire.PathHardware, r.hardware)
	m.Post(wire.PathProgress, r.progress)
	m.Post(wire.PathFailure, r.failure)
	m.Get(wire.PathApproval+"{mac}", r.approval)
	m.Get(wire.PathImages+"{os}/{version}", r.imageAuth(r.serveImage))
	m.Head(wire.PathImages+"{os}/{version}", r.imageAuth(r.serveImage))
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
	r.failWith(w, req, e, wire.Error{Error: e.Msg})
}

// failWith is fail with body as the answer (an error that says more than
// its text: wire.Error.ResendFrom).
func (r *Region) failWith(w http.ResponseWriter, req *http.Request, e *httpapi.Error, body wire.Error) {
	r.metrics.refused(req, e.Code)
	if e.Code >= 500 {
		r.log.Error("agent API error", "method", req.Method, "path", req.URL.Path, "code", e.Code, "err", e.Msg)
	} else {
		r.log.Info("agent API refused", "method", req.Method, "path", req.URL.Path, "code", e.Code, "err", e.Msg, "remote", req.RemoteAddr)
	}
	httpapi.WriteJSON(w, e.Code, body)
}

func (r *Region) healthz(w http.ResponseWriter, req *http.Request) {
	body := map[string]any{"region": r.cfg.RegionID, "services": r.State()}
	if err := r.health.result(req.Context()); err != nil {
		body["status"] = "unhealthy"
		body["error"] = err.Error()
		httpapi.WriteJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	body["status"] = "ok"
	httpapi.WriteJSON(w, http.StatusOK, body)
}

// hardware handles POST /api/v1/agent/hardware. With a task session it
// records the report of the task (ready -> pending_approval). Without one
// (or with a discovery session), a MAC with no active task is recorded as
// a discovered machine when discovery is on, and its agent gets a new
// discovery session.
func (r *Region) hardware(w http.ResponseWriter, req *http.Request) {
	ctx := req.Context()
	var rep wire.HardwareReport
	if e := r.countHardware(decodeHardware(w, req, &rep)); e != nil {
		r.fail(w, req, e)
		return
	}
	tok := httpapi.Bearer(req)
	if kind, _, _ := store.ParseAgentToken(tok); tok == "" || kind == store.TokenDiscovery {
		r.discover(w, req, rep)
		return
	}
	t, sess, e := r.taskSession(ctx, req, rep.TaskID, rep.MACAddress)
	if e == nil {
		e = current(t, sess)
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
	httpapi.WriteJSON(w, http.StatusOK, hardwareAnswer(t))
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
		r.fail(w, req, httpapi.Errorf(http.StatusUnauthorized, "MAC %s has active task %s: send its session token (boot the machine to get its boot token)", mac, t.ID))
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
	tok, err := r.st.OpenDiscoverySession(ctx, r.cfg.RegionID, mac, req.RemoteAddr)
	if err != nil {
		r.fail(w, req, httpapi.StoreError(err))
		return
	}
	r.log.Info("machine discovered", "mac", mac)
	httpapi.WriteJSON(w, http.StatusOK, wire.HardwareResponse{Discovered: true, SessionToken: tok})
}

// progress handles POST /api/v1/agent/progress.
func (r *Region) progress(w http.ResponseWriter, req *http.Request) {
	ctx := req.Context()
	var p wire.Progress
	e := noBearer(req)
	if e == nil {
		e = httpapi.Decode(w, req, &p)
	}
	if e == nil && (p.Stage == "" || len(p.Stage) > maxStageBytes) {
		e = httpapi.Errorf(http.StatusBadRequest, "stage is required (at most %d bytes)", maxStageBytes)
	}
	if e == nil && len(p.Message) > maxReasonBytes {
		p.Message = strings.ToValidUTF8(p.Message[:maxReasonBytes], "")
	}
	if now := time.Now(); e == nil && (p.Seq <= 0 || p.Seq > now.Add(MaxSeqSkew).UnixMicro()) {
		e = httpapi.Errorf(http.StatusBadRequest, "seq %d: want 1 up to the server clock in unix microseconds (%d) plus %s", p.Seq, now.UnixMicro(), MaxSeqSkew)
	}
	if e == nil {
		if id, res, ok := r.fast.report(ctx, req, p); ok { // agentapi/fastprogress.go
			r.progressDone(w, req, id, p, res)
			return
		}
		r.fast.settle(ctx, req)
	}
	var (
		t    store.Task
		sess store.Session
	)
	if e == nil {
		t, sess, e = r.taskSession(ctx, req, p.TaskID, p.MACAddress)
	}
	if e == nil {
		e = current(t, sess)
	}
	if e == nil && t.Status.Status == wire.StatusCompleted && p.Stage == wire.StageCompleted {
		// The agent repeats its final report (the answer was lost).
		httpapi.WriteJSON(w, http.StatusOK, wire.ProgressResponse{Status: wire.StatusCompleted, Duplicate: true})
		return
	}
	if e != nil {
		r.fail(w, req, e)
		return
	}
	p.TaskID, p.Run = t.ID, sess.Run
	res, err := r.st.ReportAgentProgress(ctx, t.ID, p)
	if err != nil {
		e := httpapi.StoreError(err)
		var te *store.TransitionError
		if errors.As(err, &te) {
			e.Msg = fmt.Sprintf("task %s is %s: progress is accepted only once it is approved", t.ID, te.From)
		}
		if be := (*store.ProgressBehindError)(nil); errors.As(err, &be) {
			// Reports this region answered were lost before they were
			// stored: the agent sends them again (wire.Error.ResendFrom).
			r.failWith(w, req, e, wire.Error{Error: e.Msg, ResendFrom: be.Expected})
			return
		}
		r.fail(w, req, e)
		return
	}
	r.progressDone(w, req, t.ID, p, res)
}

// progressDone completes a stored report: the final one moves the task to
// completed; the answer may ask the agent to report less often.
func (r *Region) progressDone(w http.ResponseWriter, req *http.Request, id string, p wire.Progress, res store.ProgressResult) {
	ctx := req.Context()
	t := store.Task{ID: id}
	status := res.Task.Status.Status
	switch {
	case p.Stage == wire.StageCompleted && p.Percentage == 100 && status == wire.StatusCompleted:
		// The progress path wrote the move to completed with the report.
		r.log.Info("task completed", "task", t.ID)
	case p.Stage == wire.StageCompleted && p.Percentage == 100:
		done, err := r.st.Transition(ctx, t.ID, wire.StatusCompleted, store.CompletedReason)
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
	httpapi.WriteJSON(w, http.StatusOK, wire.ProgressResponse{Status: status, Duplicate: res.Duplicate, NextReportMS: r.fast.nextReportMS()})
}

// failure handles POST /api/v1/agent/failure.
func (r *Region) failure(w http.ResponseWriter, req *http.Request) {
	ctx := req.Context()
	var f wire.FailureReport
	e := noBearer(req)
	if e == nil {
		e = httpapi.Decode(w, req, &f)
	}
	if e == nil && strings.TrimSpace(f.Reason) == "" {
		e = httpapi.Errorf(http.StatusBadRequest, "reason is required")
	}
	if e == nil {
		r.fast.settle(ctx, req) // the stage changes it was told were accepted come first
	}
	var (
		t    store.Task
		sess store.Session
	)
	if e == nil {
		t, sess, e = r.taskSession(ctx, req, f.TaskID, f.MACAddress)
	}
	if e == nil {
		e = current(t, sess)
	}
	if e == nil && t.Status.Status == wire.StatusFailed {
		// A repeated failure report (the answer was lost).
		httpapi.WriteJSON(w, http.StatusOK, wire.ProgressResponse{Status: wire.StatusFailed, Duplicate: true})
		return
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
		spec.TargetDisk = targetDisk(t)
		spec.Network = t.Spec.Network // a static address, when the task gives one
	}
	return resp, nil
}
