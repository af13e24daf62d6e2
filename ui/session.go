package ui

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/lpmos/lpmos/internal/httpapi"
	"github.com/lpmos/lpmos/store"
)

// Browser sessions: POST /api/v1/session trades the admin token or a named
// operator token for a random session id (an HttpOnly, SameSite=Strict
// cookie; Secure under TLS) and a CSRF token the page sends as
// X-CSRF-Token on every mutating request. Sessions live in etcd
// (store/dashsessions.go: only the id's hash, the expiry and the
// credential that opened it), so every member accepts them and a restart
// keeps them; rotating the admin token or removing the operator token ends
// them everywhere. The token never sits in the browser after login.
const (
	sessionCookie = "lpmos_session"
	csrfHeader    = "X-CSRF-Token"
	sessionTTL    = 12 * time.Hour
)

// csrfFor derives a session's CSRF token from its id: nothing more to
// store, and a page that cannot read the HttpOnly cookie cannot compute it.
func csrfFor(id string) string {
	sum := sha256.Sum256([]byte("lpmos-csrf\x00" + id))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// SessionInfo answers POST and GET /api/v1/session.
type SessionInfo struct {
	CSRFToken string    `json:"csrf_token"`
	ExpiresAt time.Time `json:"expires_at"`
	Actor     string    `json:"actor,omitempty"` // "operator" (admin token) or the operator token's name
	Kind      string    `json:"kind,omitempty"`  // admin or read-only
}

// LoginRequest is the body of POST /api/v1/session.
type LoginRequest struct {
	Token string `json:"token"`
}

// sessionFrom returns the request's session id and record. ok is false
// when there is none; err then says why (an ended session names its cause;
// nil: no cookie or an unknown id).
func (s *Server) sessionFrom(r *http.Request) (id string, sess store.DashboardSession, ok bool, err error) {
	c, cerr := r.Cookie(sessionCookie)
	if cerr != nil || c.Value == "" {
		return "", store.DashboardSession{}, false, nil
	}
	sess, err = s.checkSession(r.Context(), c.Value) // ui/session_local.go
	switch {
	case err == nil:
		return c.Value, sess, true, nil
	case errors.Is(err, store.ErrNotFound):
		return c.Value, sess, false, errSessionUnknown
	default:
		return c.Value, sess, false, err
	}
}

// errSessionUnknown: a cookie naming no session (signed out, ended more
// than a day ago, or forged).
var errSessionUnknown = errors.New("your dashboard session has ended (signed out, or it expired more than a day ago): sign in again")

// writeSessionError answers a request whose session is missing or ended:
// 401 naming the cause (the sign-in page shows it; session_ended is set
// when the browser had a session), 503 when etcd could not answer.
func writeSessionError(w http.ResponseWriter, err error) {
	switch {
	case err == nil:
		w.Header().Set("WWW-Authenticate", `Bearer realm="lpmos"`)
		writeError(w, http.StatusUnauthorized, errors.New("missing token: send Authorization: Bearer <token> (the token is in <data-dir>/admin.token), or log in to the dashboard"))
	case errors.Is(err, store.ErrSessionEnded), errors.Is(err, errSessionUnknown):
		msg := err.Error()
		if errors.Is(err, store.ErrSessionEnded) {
			msg = "your dashboard session " + strings.TrimPrefix(msg, store.ErrSessionEnded.Error()+": ") + "; sign in again"
		}
		httpapi.WriteJSON(w, http.StatusUnauthorized, map[string]any{"error": msg, "session_ended": true})
	default:
		writeError(w, http.StatusServiceUnavailable, fmt.Errorf("check session: %w", err))
	}
}

func csrfValid(r *http.Request, id string) bool {
	got := r.Header.Get(csrfHeader)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(csrfFor(id))) == 1
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		// A JSON-only login cannot be posted by a cross-site HTML form.
		writeError(w, http.StatusUnsupportedMediaType, fmt.Errorf("content type %q: send application/json", ct))
		return
	}
	var req LoginRequest
	if !decodeBody(w, r, &req) {
		return
	}
	cred, valid, err := s.cfg.Store.CheckCredential(r.Context(), strings.TrimSpace(req.Token))
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, fmt.Errorf("check token: %w", err))
		return
	}
	if !valid {
		s.log.Warn("dashboard login refused", "remote", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, errors.New("invalid token: paste the admin token (it is in <data-dir>/admin.token) or a named operator token (lpmos token operator create)"))
		return
	}
	if old, err := r.Cookie(sessionCookie); err == nil { // no session fixation
		s.local.delete(old.Value)
		_ = s.cfg.Store.EndDashboardSession(r.Context(), old.Value)
	}
	id, sess, err := s.openSession(r.Context(), cred) // ui/session_local.go
	if err != nil {
		writeStoreError(w, err)
		return
	}
	// The cookie outlives the session by the grace period, so a browser
	// coming back is told its session expired.
	keep := sessionTTL + store.DashboardSessionGrace
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: id, Path: "/", Expires: sess.ExpiresAt.Add(store.DashboardSessionGrace), MaxAge: int(keep / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	s.log.Info("dashboard login", "remote", r.RemoteAddr, "actor", sess.Actor, "kind", sess.Kind)
	writeJSON(w, http.StatusOK, sessionInfo(id, sess))
}

func sessionInfo(id string, sess store.DashboardSession) SessionInfo {
	return SessionInfo{CSRFToken: csrfFor(id), ExpiresAt: sess.ExpiresAt, Actor: sess.Actor, Kind: sess.Kind}
}

func (s *Server) currentSession(w http.ResponseWriter, r *http.Request) {
	id, sess, ok, err := s.sessionFrom(r)
	if !ok {
		if err == nil {
			writeError(w, http.StatusUnauthorized, errors.New("not logged in"))
			return
		}
		writeSessionError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, sessionInfo(id, sess))
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	id, _, ok, err := s.sessionFrom(r)
	if ok {
		if !csrfValid(r, id) {
			writeError(w, http.StatusForbidden, errors.New("missing or invalid "+csrfHeader))
			return
		}
	}
	if ok || errors.Is(err, store.ErrSessionEnded) {
		s.local.delete(id)
		if err := s.cfg.Store.EndDashboardSession(r.Context(), id); err != nil {
			writeError(w, http.StatusServiceUnavailable, err)
			return
		}
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	w.WriteHeader(http.StatusNoContent)
}

// operatorAuth decides whether r comes from an operator: a named operator
// token (ui/operators.go), the admin token as a bearer token, or a
// session cookie (plus a valid CSRF token unless the method is safe; a
// read-only session may only read). It returns the request carrying the
// actor's name, or writes the error answer itself and says no.
func (s *Server) operatorAuth(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	if r2, handled := s.namedOperatorAuth(w, r); handled {
		return r2, r2 != nil
	}
	if tok := httpapi.Bearer(r); tok != "" {
		valid, err := s.cfg.Store.CheckAdminToken(r.Context(), tok)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, fmt.Errorf("check token: %w", err))
			return nil, false
		}
		if !valid {
			w.Header().Set("WWW-Authenticate", `Bearer realm="lpmos", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, errors.New("invalid token"))
			return nil, false
		}
		return r, true
	}
	id, sess, ok, err := s.sessionFrom(r)
	if !ok {
		writeSessionError(w, err)
		return nil, false
	}
	if !safeMethod(r.Method) {
		if !csrfValid(r, id) {
			writeError(w, http.StatusForbidden, errors.New("missing or invalid "+csrfHeader+" header"))
			return nil, false
		}
		if sess.Kind == store.OperatorReadOnly {
			writeError(w, http.StatusForbidden, fmt.Errorf("signed in with read-only operator token %q: it cannot %s %s; sign in with an admin token", sess.Actor, r.Method, r.URL.Path))
			return nil, false
		}
	}
	if sess.Via == store.ViaOperatorToken {
		r = r.WithContext(store.WithActor(r.Context(), sess.Actor))
	}
	return r, true
}
