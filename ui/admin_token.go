package ui

import (
	"net/http"
)

// RotateAdminResponse is the answer of POST /api/v1/auth/rotate-admin: the
// new admin token, shown once.
type RotateAdminResponse struct {
	Token string `json:"token"`
}

// clear ends every dashboard session (they were opened with the old token).
func (ss *sessions) clear() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.m = nil
}

// rotateAdmin is POST /api/v1/auth/rotate-admin: a new admin token
// replaces the old one at once (only its hash is stored); this process's
// dashboard sessions end.
func (s *Server) rotateAdmin(w http.ResponseWriter, r *http.Request) {
	tok, err := s.cfg.Store.RotateAdminToken(r.Context())
	if err != nil {
		writeStoreError(w, err)
		return
	}
	s.sessions.clear()
	s.log.Warn("admin token rotated: the old token is refused from now on", "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, RotateAdminResponse{Token: tok})
}
