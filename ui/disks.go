package ui

import "net/http"

// ApproveRequest is the optional body of PUT /api/v1/tasks/{id}/approve.
// Disk names the disk to erase (kernel name, /dev/name, serial, wwn or
// by-path name) when it is not the one the server chose; it must match
// exactly one disk of the task's hardware report (400 otherwise). The
// dashboard always sends the disk its confirmation named.
type ApproveRequest struct {
	Disk string `json:"disk,omitempty"`
}

// approveBody reads the optional body (none at all is fine).
func approveBody(w http.ResponseWriter, r *http.Request) (ApproveRequest, bool) {
	var req ApproveRequest
	if r.ContentLength == 0 {
		return req, true
	}
	return req, decodeBody(w, r, &req)
}

// approve moves the task to approved, storing the operator's disk choice
// in the same transaction (store.Approve).
func (s *Server) approve(w http.ResponseWriter, r *http.Request, id, disk string) {
	task, err := s.cfg.Store.Approve(r.Context(), id, disk)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	if target := task.TargetDisk; target != nil {
		s.log.Info("task approved", "task", id, "disk", target.Description, "chosen_by", target.ChosenBy)
	} else {
		s.log.Info("task approved", "task", id, "disk", "(the agent chooses)")
	}
	writeJSON(w, http.StatusOK, task)
}
