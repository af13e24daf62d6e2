package ui

import (
	"fmt"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/lpmos/lpmos/store"
)

// routesOperatorExtra adds, behind the operator check, the single-object
// reads the README's API table lists (GET /machines/{mac},
// GET /cluster/members/{name}) and the known regions.
func (s *Server) routesOperatorExtra(r chi.Router) {
	r.Get("/machines/{mac}", s.getMachine)
	r.Get("/cluster/members/{name}", s.getMember)
}

func (s *Server) getMachine(w http.ResponseWriter, r *http.Request) {
	mac, err := store.ParseMAC(chi.URLParam(r, "mac"))
	if err != nil {
		writeStoreError(w, err)
		return
	}
	m, err := s.cfg.Store.GetMachine(r.Context(), mac)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// getMember answers one member of GET /cluster/members, by name or id.
func (s *Server) getMember(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	st, err := s.cfg.Store.ClusterStatus(r.Context())
	if err != nil {
		writeClusterError(w, err)
		return
	}
	for _, m := range st.Members {
		if m.Name == name || m.ID == name {
			writeJSON(w, http.StatusOK, m)
			return
		}
	}
	names := make([]string, 0, len(st.Members))
	for _, m := range st.Members {
		names = append(names, m.Name)
	}
	writeError(w, http.StatusNotFound, fmt.Errorf("no member %q (members: %v)", name, names))
}

// deleteTask is DELETE /api/v1/tasks/{id}?purge=true: an ended task and
// its history are deleted (409 naming the status of an active one).
func (s *Server) deleteTask(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	t, err := s.cfg.Store.DeleteTask(r.Context(), id)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	s.log.Info("task deleted", "task", id, "by", store.ActorFrom(r.Context()))
	writeJSON(w, http.StatusOK, t)
}
