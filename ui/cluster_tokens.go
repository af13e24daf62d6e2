package ui

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

// clusterListTokens is GET /api/v1/cluster/tokens: the join tokens, never
// their secrets.
func (s *Server) clusterListTokens(w http.ResponseWriter, r *http.Request) {
	toks, err := s.cfg.Store.ListJoinTokens(r.Context())
	if err != nil {
		writeClusterError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toks)
}

// clusterRevokeToken is DELETE /api/v1/cluster/tokens/{id}.
func (s *Server) clusterRevokeToken(w http.ResponseWriter, r *http.Request) {
	tok, err := s.cfg.Store.RevokeJoinToken(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		writeClusterError(w, err)
		return
	}
	s.log.Info("join token revoked", "id", tok.ID, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, tok)
}
