package ui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/health"
	"github.com/lpmos/lpmos/internal/httpapi"
	"github.com/lpmos/lpmos/store"
)

// CreateTaskRequest is the body of POST /api/v1/tasks (the seed's fields
// plus hostname, SSH keys and user data).
type CreateTaskRequest struct {
	RegionID          string   `json:"region_id"`
	TargetMAC         string   `json:"target_mac"`
	OSType            string   `json:"os_type"`
	OSVersion         string   `json:"os_version"`
	Hostname          string   `json:"hostname,omitempty"`
	SSHAuthorizedKeys []string `json:"ssh_authorized_keys,omitempty"`
	UserData          string   `json:"user_data,omitempty"`

	RootDeviceHints *wire.RootDeviceHints `json:"root_device_hints,omitempty"` // the disk to erase (agent/disksel)
	// Network is a static address for the installed system; nil: DHCP.
	Network *wire.StaticNetwork `json:"network,omitempty"`
	// AllowMissingImage creates the task although the catalog has no
	// image for OSType/OSVersion yet (ui/create_checks.go).
	AllowMissingImage bool `json:"allow_missing_image,omitempty"`
	// BMC is the machine's BMC (power control, ui/power.go); its password
	// is sealed in etcd and never in an answer.
	BMC *store.BMCInput `json:"bmc,omitempty"`
}

// TaskList is the answer of GET /api/v1/tasks.
type TaskList struct {
	Tasks    []store.Task `json:"tasks"`
	Count    int          `json:"count"`
	Revision int64        `json:"revision"`
	// Continue, on a paged list (?limit= or ?continue=), fetches the next
	// page: pass it as ?continue=; absent on the last page.
	Continue string `json:"continue,omitempty"`
}

// TaskDetail is the answer of GET /api/v1/tasks/{id}.
type TaskDetail struct {
	store.Task
	Events []store.Event `json:"events"`
}

// HealthReport is the answer of GET /api/v1/health.
type HealthReport struct {
	Status   string           `json:"status"` // "ok" or "degraded"
	Version  string           `json:"version"`
	Services []health.Service `json:"services"`
	// Alarm is set while etcd has an alarm raised (NOSPACE: writes fail).
	Alarm string `json:"alarm,omitempty"`
}

// AddImageRequest is the body of POST /api/v1/images.
type AddImageRequest = store.Image

func (s *Server) routesAPI(r chi.Router) {
	r.Get("/health", s.health)
	s.routesCluster(r) // ui/cluster.go: join and CA open, the rest behind the operator
	r.Group(func(r chi.Router) {
		r.Use(s.requireOperator)
		r.Post("/tasks", s.createTask)
		r.Get("/tasks", s.listTasks)
		r.Get("/tasks/{id}", s.getTask)
		r.Get("/tasks/{id}/events", s.taskEvents)
		r.Get("/tasks/{id}/watch", s.watchTask)
		r.Put("/tasks/{id}/approve", s.approveTask)
		r.Delete("/tasks/{id}", s.cancelTask)
		r.Post("/tasks/{id}/retry", s.retryTask)
		r.Get("/machines", serveList(s.cfg.Store.ListMachines))
		r.Delete("/machines/{mac}", s.deleteMachine)
		r.Get("/regions", serveList(s.cfg.Store.ListRegions))
		r.Get("/images", serveList(s.cfg.Store.ListImages))
		r.Post("/images", s.addImage)
		r.Delete("/images/{os}/{version}", s.deleteImage)
		s.routesPower(r)         // ui/power.go
		s.routesOperatorExtra(r) // ui/firsthour_api.go
	})
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed on %s", r.Method, r.URL.Path))
	})
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	services := s.cfg.Health.Snapshot()
	rep := HealthReport{Status: health.Overall(services), Version: s.cfg.Version, Services: services}
	rep.Alarm = s.alarmMessage()
	code := http.StatusOK
	if rep.Status != "ok" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, rep)
}

func (s *Server) createTask(w http.ResponseWriter, r *http.Request) {
	var req CreateTaskRequest
	if !decodeBody(w, r, &req) {
		return
	}
	spec := store.Spec{
		RegionID: req.RegionID, TargetMAC: req.TargetMAC, OSType: req.OSType, OSVersion: req.OSVersion,
		Hostname: req.Hostname, SSHAuthorizedKeys: req.SSHAuthorizedKeys, UserData: req.UserData,
		RootDeviceHints: req.RootDeviceHints,
		Network:         req.Network,
	}
	if e := s.checkCreate(r.Context(), spec, req.AllowMissingImage); e != nil { // ui/create_checks.go
		httpapi.Fail(w, e)
		return
	}
	task, err := s.cfg.Store.CreateTask(r.Context(), spec, store.WithBMC(req.BMC))
	if err != nil {
		writeStoreError(w, err)
		return
	}
	s.log.Info("task created", "task", task.ID, "mac", task.Spec.TargetMAC, "region", task.Spec.RegionID)
	writeJSON(w, http.StatusCreated, task)
}

func (s *Server) listTasks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.Filter{Status: store.Status(q.Get("status")), Region: q.Get("region")}
	if f.Status != "" && !f.Status.Valid() {
		writeError(w, http.StatusBadRequest, fmt.Errorf("unknown status %q (one of %v)", f.Status, wire.AllStatuses))
		return
	}
	if m := q.Get("mac"); m != "" {
		mac, err := store.ParseMAC(m)
		if err != nil {
			writeStoreError(w, err)
			return
		}
		f.MAC = mac
	}
	limit, cur, _, err := pageParams(r) // ui/tasks_page.go
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	s.listTasksPage(w, r, f, limit, cur)
}

func (s *Server) getTask(w http.ResponseWriter, r *http.Request) {
	d, err := s.taskDetail(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) taskEvents(w http.ResponseWriter, r *http.Request) {
	d, err := s.taskDetail(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, d.Events)
}

// taskDetail reads a task with its history (ErrNotFound for an unknown id).
func (s *Server) taskDetail(ctx context.Context, id string) (TaskDetail, error) {
	task, err := s.cfg.Store.GetTask(ctx, id)
	if err != nil {
		return TaskDetail{}, err
	}
	events, err := s.cfg.Store.Events(ctx, id)
	if err != nil {
		return TaskDetail{}, err
	}
	return TaskDetail{Task: task, Events: events}, nil
}

// watchTask streams the task's changes as newline-delimited JSON until the
// task ends or the client goes away; the CLI's `task watch` reads it.
func (s *Server) watchTask(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	task, rev, err := s.cfg.Store.GetTaskRev(r.Context(), id)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, errors.New("streaming unsupported"))
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	changes := s.cfg.Store.Watch(ctx, rev+1)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	_ = enc.Encode(WatchLine{Type: "snapshot", TaskID: id, Task: &task})
	flusher.Flush()
	if !task.Status.Status.Active() {
		return // ended already: the snapshot says how, and the stream ends
	}
	for {
		c, ok := <-changes
		if !ok {
			return
		}
		if c.Kind == store.KindWatchRestart {
			// etcd compacted the history under the watch: a fresh
			// snapshot, and watch on from its revision.
			if changes, err = s.resyncTaskWatch(ctx, id, enc); err != nil || changes == nil {
				return
			}
			flusher.Flush()
			continue
		}
		if c.TaskID != id {
			continue
		}
		line := WatchLine{Type: string(c.Kind), TaskID: id, Status: c.Status, Progress: c.Progress, Event: c.Event}
		if c.Kind == store.KindHardware {
			line.Hardware = c.Hardware
		}
		line.TargetDisk = c.TargetDisk
		line.BMC, line.Power = c.BMC, c.Power // power control (issue 13); the BMC without its password
		if err := enc.Encode(line); err != nil {
			return
		}
		flusher.Flush()
		if c.Kind == store.KindStatus && !c.Status.Status.Active() {
			return
		}
	}
}

// WatchLine is one line of GET /api/v1/tasks/{id}/watch.
type WatchLine struct {
	Type     string              `json:"type"`
	TaskID   string              `json:"task_id"`
	Task     *store.Task         `json:"task,omitempty"`
	Status   *store.StatusRecord `json:"status,omitempty"`
	Progress *wire.Progress      `json:"progress,omitempty"`
	Hardware *wire.Hardware      `json:"hardware,omitempty"`
	Event    *store.Event        `json:"event,omitempty"`

	TargetDisk *store.TargetDisk `json:"target_disk,omitempty"`

	BMC   *store.BMCInfo    `json:"bmc,omitempty"`
	Power *store.PowerState `json:"power,omitempty"`
}

func (s *Server) approveTask(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	ctx := r.Context()
	body, ok := approveBody(w, r)
	if !ok {
		return
	}
	task, err := s.cfg.Store.GetTask(ctx, id)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	// An approval the agent cannot act on is worse than none: fail the task
	// now, with the fix in the reason, rather than let the machine hang.
	if task.Status.Status == wire.StatusPendingApproval {
		if _, err := s.cfg.Store.GetImage(ctx, task.Spec.OSType, task.Spec.OSVersion); errors.Is(err, store.ErrNotFound) {
			reason := fmt.Sprintf("no image for %s %s: add one with `lpmos image add %s %s <file-or-url>`, then retry the task",
				task.Spec.OSType, task.Spec.OSVersion, task.Spec.OSType, task.Spec.OSVersion)
			if _, ferr := s.cfg.Store.Fail(ctx, id, reason, nil); ferr != nil {
				writeStoreError(w, ferr)
				return
			}
			writeError(w, http.StatusUnprocessableEntity, errors.New(reason))
			return
		} else if err != nil {
			writeStoreError(w, err)
			return
		}
	}
	s.approve(w, r, id, body.Disk)
}

func (s *Server) cancelTask(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("purge") == "true" { // delete an ended task (ui/firsthour_api.go)
		s.deleteTask(w, r)
		return
	}
	s.transition(w, r, chi.URLParam(r, "id"), wire.StatusCancelled, "cancelled by "+store.ActorFrom(r.Context()))
}

func (s *Server) retryTask(w http.ResponseWriter, r *http.Request) {
	s.transition(w, r, chi.URLParam(r, "id"), wire.StatusPending, "retried by "+store.ActorFrom(r.Context()))
}

func (s *Server) transition(w http.ResponseWriter, r *http.Request, id string, to store.Status, reason string) {
	task, err := s.cfg.Store.Transition(r.Context(), id, to, reason)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	s.log.Info("task status changed", "task", id, "status", to)
	writeJSON(w, http.StatusOK, task)
}

// serveList answers a GET with the list get returns: [] rather than null
// when it is empty.
func serveList[T any](get func(context.Context) ([]T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		list, err := get(r.Context())
		if err != nil {
			writeStoreError(w, err)
			return
		}
		if list == nil {
			list = []T{}
		}
		writeJSON(w, http.StatusOK, list)
	}
}

func (s *Server) deleteMachine(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.Store.DeleteMachine(r.Context(), chi.URLParam(r, "mac")); err != nil {
		writeStoreError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// decodeBody reads a strict JSON body (httpapi.Decode) or answers the
// error itself.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if e := httpapi.Decode(w, r, v); e != nil {
		httpapi.Fail(w, e)
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) { httpapi.WriteJSON(w, code, v) }

func writeError(w http.ResponseWriter, code int, err error) { httpapi.WriteError(w, code, err.Error()) }

// writeStoreError answers a store error with its status (httpapi.StoreError).
func writeStoreError(w http.ResponseWriter, err error) { httpapi.Fail(w, httpapi.StoreError(err)) }
