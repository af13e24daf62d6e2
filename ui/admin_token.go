package ui

import (
	"net/http"
)

// RotateAdminResponse is the answer of POST /api/v1/auth/rotate-admin: the
// new admin token, shown once.
type RotateAdminResponse struct {
	Token string `json:"token"`
}

// rotateAdmin is POST /api/v1/auth/rotate-admin: a new admin token
// replaces the old one at once (only its hash is stored); every dashboard
// session opened with the old one ends, on every member (its record names
// the admin token's revision: store/dashsessions.go).
func (s *Server) rotateAdmin(w http.ResponseWriter, r *http.Request) {
	tok, err := s.cfg.Store.RotateAdminToken(r.Context())
	if err != nil {
		writeStoreError(w, err)
		return
	}
	s.log.Warn("admin token rotated: the old token is refused from now on", "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, RotateAdminResponse{Token: tok})
}
