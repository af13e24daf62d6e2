package ui

import (
	"errors"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/lpmos/lpmos/store"
)

// Power control through the task's BMC (issue 13). The control plane only
// queues actions; the region that owns the task performs them (BMC
// networks are per site) and records each one and its result as a task
// event, which /ws carries.

// PowerAnswer is GET /api/v1/tasks/{id}/power.
type PowerAnswer struct {
	State     string     `json:"state"` // on, off, unknown
	CheckedAt *time.Time `json:"checked_at,omitempty"`
	Error     string     `json:"error,omitempty"`
}

// PowerActionRequest is the body of POST /api/v1/tasks/{id}/power.
type PowerActionRequest struct {
	Action string `json:"action"` // on, off, cycle, pxe, disk
}

// PowerActionAnswer is the 202 answer of POST /api/v1/tasks/{id}/power.
type PowerActionAnswer struct {
	TaskID      string    `json:"task_id"`
	RegionID    string    `json:"region_id"`
	Action      string    `json:"action"`
	RequestedAt time.Time `json:"requested_at"`
}

func (s *Server) routesPower(r chi.Router) {
	r.Get("/tasks/{id}/power", s.getPower)
	r.Post("/tasks/{id}/power", s.postPower)
	r.Put("/tasks/{id}/bmc", s.putBMC)
	r.Delete("/tasks/{id}/bmc", s.deleteBMC)
	r.Get("/machines/{mac}/bmc", s.getMachineBMC)
	r.Put("/machines/{mac}/bmc", s.putMachineBMC)
	r.Delete("/machines/{mac}/bmc", s.deleteMachineBMC)
}

// A discovered machine's BMC: the next task created for its MAC (without
// a BMC of its own) takes it.

func (s *Server) getMachineBMC(w http.ResponseWriter, r *http.Request) {
	info, err := s.cfg.Store.MachineBMC(r.Context(), chi.URLParam(r, "mac"))
	if err != nil {
		writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) putMachineBMC(w http.ResponseWriter, r *http.Request) {
	var in store.BMCInput
	if !decodeBody(w, r, &in) {
		return
	}
	mac := chi.URLParam(r, "mac")
	info, err := s.cfg.Store.SetMachineBMC(r.Context(), mac, &in)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	s.log.Info("machine BMC set", "mac", mac, "bmc", info.String(), "by", store.ActorFrom(r.Context()))
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) deleteMachineBMC(w http.ResponseWriter, r *http.Request) {
	if _, err := s.cfg.Store.SetMachineBMC(r.Context(), chi.URLParam(r, "mac"), nil); err != nil {
		writeStoreError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) getPower(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	t, err := s.cfg.Store.GetTask(r.Context(), id)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	if t.BMC == nil {
		writeError(w, http.StatusConflict, errors.New("task "+id+" has no BMC: set one with PUT /api/v1/tasks/"+id+"/bmc"))
		return
	}
	ans := PowerAnswer{State: store.PowerUnknown, Error: "not polled yet"}
	if p := t.Power; p != nil {
		ans = PowerAnswer{State: p.State, CheckedAt: &p.CheckedAt, Error: p.Error}
	}
	writeJSON(w, http.StatusOK, ans)
}

func (s *Server) postPower(w http.ResponseWriter, r *http.Request) {
	var body PowerActionRequest
	if !decodeBody(w, r, &body) {
		return
	}
	if body.Action == "" {
		writeError(w, http.StatusBadRequest, errors.New("action: missing: one of on, off, cycle, pxe, disk"))
		return
	}
	req, err := s.cfg.Store.RequestPower(r.Context(), chi.URLParam(r, "id"), body.Action, store.ActorFrom(r.Context()))
	if err != nil {
		writeStoreError(w, err)
		return
	}
	s.log.Info("power action requested", "task", req.TaskID, "region", req.RegionID, "action", req.Action)
	writeJSON(w, http.StatusAccepted, PowerActionAnswer{TaskID: req.TaskID, RegionID: req.RegionID, Action: req.Action, RequestedAt: req.RequestedAt})
}

func (s *Server) putBMC(w http.ResponseWriter, r *http.Request) {
	var in store.BMCInput
	if !decodeBody(w, r, &in) {
		return
	}
	id := chi.URLParam(r, "id")
	info, err := s.cfg.Store.SetTaskBMC(r.Context(), id, &in, store.ActorFrom(r.Context()))
	if err != nil {
		writeStoreError(w, err)
		return
	}
	s.log.Info("task BMC set", "task", id, "bmc", info.String())
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) deleteBMC(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	if _, err := s.cfg.Store.SetTaskBMC(r.Context(), id, nil, store.ActorFrom(r.Context())); err != nil {
		writeStoreError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
