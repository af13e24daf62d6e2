package ui

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/lpmos/lpmos/internal/httpapi"
	"github.com/lpmos/lpmos/store"
)

// CreateOperatorTokenRequest is the body of POST /api/v1/auth/operators.
type CreateOperatorTokenRequest struct {
	Name string `json:"name"`
	Kind string `json:"kind,omitempty"` // admin (default) or read-only
}

// namedOperatorAuth handles a bearer that is a named operator token
// (lpo_...): it answers 401 for a wrong or removed one, 403 for a write
// with a read-only one, and otherwise returns the request with the token's
// name as the actor. handled is false for any other credential.
func (s *Server) namedOperatorAuth(w http.ResponseWriter, r *http.Request) (next *http.Request, handled bool) {
	tok := httpapi.Bearer(r)
	if !strings.HasPrefix(tok, store.OperatorTokenPrefix) {
		return nil, false
	}
	op, ok, err := s.cfg.Store.CheckOperatorToken(r.Context(), tok)
	switch {
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, fmt.Errorf("check token: %w", err))
		return nil, true
	case !ok:
		w.Header().Set("WWW-Authenticate", `Bearer realm="lpmos", error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, errors.New("invalid token: this operator token is unknown or was removed (see `lpmos token operator list`)"))
		return nil, true
	case op.Kind == store.OperatorReadOnly && !safeMethod(r.Method):
		writeError(w, http.StatusForbidden, fmt.Errorf("operator token %q is read-only: it cannot %s %s; use an admin token", op.Name, r.Method, r.URL.Path))
		return nil, true
	}
	return r.WithContext(store.WithActor(r.Context(), op.Name)), true
}

func (s *Server) createOperatorToken(w http.ResponseWriter, r *http.Request) {
	var req CreateOperatorTokenRequest
	if !decodeBody(w, r, &req) {
		return
	}
	op, err := s.cfg.Store.CreateOperatorToken(r.Context(), req.Name, req.Kind)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	s.log.Info("operator token created", "name", op.Name, "kind", op.Kind, "by", store.ActorFrom(r.Context()))
	writeJSON(w, http.StatusCreated, op)
}

func (s *Server) listOperatorTokens(w http.ResponseWriter, r *http.Request) {
	ops, err := s.cfg.Store.ListOperatorTokens(r.Context())
	if err != nil {
		writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ops)
}

func (s *Server) removeOperatorToken(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	if err := s.cfg.Store.RemoveOperatorToken(r.Context(), name); err != nil {
		writeStoreError(w, err)
		return
	}
	s.log.Info("operator token removed", "name", name, "by", store.ActorFrom(r.Context()))
	writeJSON(w, http.StatusOK, map[string]string{"removed": name})
}
