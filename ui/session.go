package ui

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/lpmos/lpmos/internal/httpapi"
)

// Browser sessions: POST /api/v1/session trades the admin token for a
// random session id (an HttpOnly, SameSite=Strict cookie; Secure under TLS)
// and a CSRF token the page sends as X-CSRF-Token on every mutating request.
// Sessions live in this process's memory: a restart logs browsers out, and
// the admin token never sits in the browser after login.
const (
	sessionCookie = "lpmos_session"
	csrfHeader    = "X-CSRF-Token"
	sessionTTL    = 12 * time.Hour
	maxSessions   = 10000
)

type session struct {
	csrf    string
	expires time.Time
}

// sessions is the in-memory session table. The zero value is ready.
type sessions struct {
	mu sync.Mutex
	m  map[string]session
}

func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (ss *sessions) create(now time.Time) (id string, s session) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.m == nil {
		ss.m = map[string]session{}
	}
	if len(ss.m) >= maxSessions {
		for k, v := range ss.m {
			if now.After(v.expires) {
				delete(ss.m, k)
			}
		}
		for k := range ss.m { // still full: forget an arbitrary one
			if len(ss.m) < maxSessions {
				break
			}
			delete(ss.m, k)
		}
	}
	id = randomToken()
	s = session{csrf: randomToken(), expires: now.Add(sessionTTL)}
	ss.m[id] = s
	return id, s
}

func (ss *sessions) get(id string, now time.Time) (session, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[id]
	if !ok {
		return session{}, false
	}
	if now.After(s.expires) {
		delete(ss.m, id)
		return session{}, false
	}
	return s, true
}

func (ss *sessions) delete(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.m, id)
}

// SessionInfo answers POST and GET /api/v1/session.
type SessionInfo struct {
	CSRFToken string    `json:"csrf_token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// LoginRequest is the body of POST /api/v1/session.
type LoginRequest struct {
	Token string `json:"token"`
}

// sessionFrom returns the request's session, if its cookie names a live one.
func (s *Server) sessionFrom(r *http.Request) (string, session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return "", session{}, false
	}
	sess, ok := s.sessions.get(c.Value, time.Now())
	return c.Value, sess, ok
}

func csrfValid(r *http.Request, sess session) bool {
	got := r.Header.Get(csrfHeader)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) == 1
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
	valid, err := s.cfg.Store.CheckAdminToken(r.Context(), strings.TrimSpace(req.Token))
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, fmt.Errorf("check token: %w", err))
		return
	}
	if !valid {
		s.log.Warn("dashboard login refused", "remote", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, errors.New("invalid token (it is in <data-dir>/admin.token)"))
		return
	}
	if old, err := r.Cookie(sessionCookie); err == nil { // no session fixation
		s.sessions.delete(old.Value)
	}
	id, sess := s.sessions.create(time.Now())
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: id, Path: "/", Expires: sess.expires, MaxAge: int(sessionTTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	s.log.Info("dashboard login", "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, SessionInfo{CSRFToken: sess.csrf, ExpiresAt: sess.expires})
}

func (s *Server) currentSession(w http.ResponseWriter, r *http.Request) {
	_, sess, ok := s.sessionFrom(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, errors.New("not logged in"))
		return
	}
	writeJSON(w, http.StatusOK, SessionInfo{CSRFToken: sess.csrf, ExpiresAt: sess.expires})
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	id, sess, ok := s.sessionFrom(r)
	if ok {
		if !csrfValid(r, sess) {
			writeError(w, http.StatusForbidden, errors.New("missing or invalid "+csrfHeader))
			return
		}
		s.sessions.delete(id)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	w.WriteHeader(http.StatusNoContent)
}

// operatorAuth decides whether r comes from the operator: the admin token as
// a bearer token, or a session cookie (plus a valid CSRF token unless the
// method is safe). It writes the error answer itself when it says no.
func (s *Server) operatorAuth(w http.ResponseWriter, r *http.Request) bool {
	if tok := httpapi.Bearer(r); tok != "" {
		valid, err := s.cfg.Store.CheckAdminToken(r.Context(), tok)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, fmt.Errorf("check token: %w", err))
			return false
		}
		if !valid {
			w.Header().Set("WWW-Authenticate", `Bearer realm="lpmos", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, errors.New("invalid token"))
			return false
		}
		return true
	}
	if _, sess, ok := s.sessionFrom(r); ok {
		if !safeMethod(r.Method) && !csrfValid(r, sess) {
			writeError(w, http.StatusForbidden, errors.New("missing or invalid "+csrfHeader+" header"))
			return false
		}
		return true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="lpmos"`)
	writeError(w, http.StatusUnauthorized, errors.New("missing token: send Authorization: Bearer <token> (the token is in <data-dir>/admin.token), or log in to the dashboard"))
	return false
}
