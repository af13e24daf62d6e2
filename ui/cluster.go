package ui

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/lpmos/lpmos/store"
)

// CreateJoinTokenRequest is the body of POST /api/v1/cluster/tokens.
type CreateJoinTokenRequest struct {
	TTL       string `json:"ttl,omitempty"`        // Go duration, default "1h"
	SingleUse bool   `json:"single_use,omitempty"` // the default; kept for old clients
	Reusable  bool   `json:"reusable,omitempty"`   // admits any number of joins until it expires
}

// CAResponse is the answer of GET /api/v1/cluster/ca.
type CAResponse struct {
	CA     string `json:"ca"`     // PEM
	SHA256 string `json:"sha256"` // of the DER bytes: the pin in join tokens
}

// routesCluster mounts the membership API: the CA and the join are open
// (a join authenticates with its token), the rest needs the operator.
func (s *Server) routesCluster(r chi.Router) {
	r.Get("/cluster/ca", s.clusterCA)
	r.Post("/cluster/join", s.clusterJoin)
	r.Post("/cluster/join/abort", s.clusterAbortJoin) // the joiner's proof authenticates it
	r.Group(func(r chi.Router) {
		r.Use(s.requireOperator)
		r.Get("/cluster/members", s.clusterMembers)
		r.Delete("/cluster/members/{name}", s.clusterRemove)
		r.Post("/cluster/tokens", s.clusterCreateToken)
		r.Get("/cluster/tokens", s.clusterListTokens)          // ui/cluster_tokens.go
		r.Delete("/cluster/tokens/{id}", s.clusterRevokeToken) // ui/cluster_tokens.go
		r.Post("/auth/rotate-admin", s.rotateAdmin)            // ui/admin_token.go
		r.Post("/auth/operators", s.createOperatorToken)       // ui/operators.go
		r.Get("/auth/operators", s.listOperatorTokens)
		r.Delete("/auth/operators/{name}", s.removeOperatorToken)
	})
}

func (s *Server) clusterCA(w http.ResponseWriter, _ *http.Request) {
	ca := s.cfg.Store.CA()
	if ca == nil {
		writeError(w, http.StatusNotFound, store.ErrNotEmbedded)
		return
	}
	writeJSON(w, http.StatusOK, CAResponse{CA: string(ca.CertPEM), SHA256: ca.Fingerprint()})
}

func (s *Server) clusterJoin(w http.ResponseWriter, r *http.Request) {
	var req store.JoinRequest
	if !decodeBody(w, r, &req) {
		return
	}
	resp, err := s.cfg.Store.AdmitMember(r.Context(), req)
	if err != nil {
		s.log.Warn("join refused", "name", req.Name, "peer_url", req.PeerURL, "remote", r.RemoteAddr, "error", err)
		writeClusterError(w, err)
		return
	}
	s.log.Info("member admitted", "name", req.Name, "id", resp.MemberID, "peer_url", req.PeerURL, "region", req.RegionID, "reused", resp.Reused)
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) clusterMembers(w http.ResponseWriter, r *http.Request) {
	st, err := s.cfg.Store.ClusterStatus(r.Context())
	if err != nil {
		writeClusterError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) clusterRemove(w http.ResponseWriter, r *http.Request) {
	m, err := s.cfg.Store.RemoveMember(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		writeClusterError(w, err)
		return
	}
	s.log.Info("member removed by operator", "name", m.Name, "id", m.ID)
	writeJSON(w, http.StatusOK, m)
}

func (s *Server) clusterCreateToken(w http.ResponseWriter, r *http.Request) {
	var req CreateJoinTokenRequest
	if !decodeBody(w, r, &req) {
		return
	}
	ttl := time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("ttl %q: want a duration like 1h or 30m", req.TTL))
			return
		}
		ttl = d
	}
	tok, err := s.cfg.Store.CreateJoinToken(r.Context(), ttl, !req.Reusable)
	if err != nil {
		writeClusterError(w, err)
		return
	}
	s.log.Info("join token created", "id", tok.ID, "expires_at", tok.ExpiresAt, "single_use", tok.SingleUse)
	writeJSON(w, http.StatusCreated, tok)
}

func writeClusterError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, store.ErrJoinDenied):
		writeError(w, http.StatusForbidden, err)
	case errors.Is(err, store.ErrNotEmbedded):
		writeError(w, http.StatusNotImplemented, err)
	default:
		writeStoreError(w, err)
	}
}

// clusterAbortJoin lets a joiner that failed after its admission take its
// add back (it proves the token secret over the same CSR).
func (s *Server) clusterAbortJoin(w http.ResponseWriter, r *http.Request) {
	var req store.AbortJoinRequest
	if !decodeBody(w, r, &req) {
		return
	}
	m, err := s.cfg.Store.AbortJoin(r.Context(), req)
	if err != nil {
		s.log.Warn("join abort refused", "member_id", req.MemberID, "remote", r.RemoteAddr, "error", err)
		writeClusterError(w, err)
		return
	}
	s.log.Info("join aborted by the joiner: member removed", "name", m.Name, "id", m.ID, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, m)
}
