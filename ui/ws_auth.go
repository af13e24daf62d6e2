package ui

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/lpmos/lpmos/internal/httpapi"
	"github.com/lpmos/lpmos/store"
)

// wsRecheck is how often an open /ws connection's credential is checked
// again: a rotated admin token, a removed operator token or an ended
// dashboard session closes the stream within it.
const wsRecheck = 5 * time.Second

// credentialEnded re-checks the credential r authenticated with; it
// returns why it no longer holds ("" while it does, or when etcd could not
// answer: an outage does not cut dashboards off).
func (s *Server) credentialEnded(ctx context.Context, r *http.Request) string {
	if tok := httpapi.Bearer(r); tok != "" {
		if strings.HasPrefix(tok, store.OperatorTokenPrefix) {
			if _, ok, err := s.cfg.Store.CheckOperatorToken(ctx, tok); err == nil && !ok {
				return "operator token removed"
			}
			return ""
		}
		if ok, err := s.cfg.Store.CheckAdminToken(ctx, tok); err == nil && !ok {
			return "admin token rotated"
		}
		return ""
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return ""
	}
	_, err = s.checkSession(ctx, c.Value)
	switch {
	case errors.Is(err, store.ErrSessionEnded):
		return strings.TrimPrefix(err.Error(), store.ErrSessionEnded.Error()+": ")
	case errors.Is(err, store.ErrNotFound):
		return "signed out"
	}
	return ""
}

// closeWhenCredentialEnds closes conn (policy violation, with the reason;
// the page then checks its session and shows the sign-in page saying why)
// once the credential of r ends, until ctx ends.
func (s *Server) closeWhenCredentialEnds(ctx context.Context, r *http.Request, conn *websocket.Conn) {
	t := time.NewTicker(wsRecheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		why := s.wsCreds.check(ctx, r, s.credentialEnded)
		if why != "" {
			s.log.Info("closing /ws: its credential ended", "remote", r.RemoteAddr, "reason", why)
			msg := "credential ended: " + why
			if len(msg) > 120 { // a close reason is at most 123 bytes
				msg = msg[:120]
			}
			_ = conn.Close(websocket.StatusPolicyViolation, msg)
			return
		}
	}
}

// credMemo shares one re-check per credential among the /ws connections
// that use it: a thousand dashboards signed in with one token cost one
// etcd read per wsRecheck, not a thousand.
type credMemo struct {
	mu sync.Mutex
	m  map[[32]byte]credResult
}

type credResult struct {
	why string
	at  time.Time
}

// check answers credentialEnded for r's credential, from a result younger
// than wsRecheck when there is one.
func (c *credMemo) check(ctx context.Context, r *http.Request, ended func(context.Context, *http.Request) string) string {
	cred := httpapi.Bearer(r)
	if cred == "" {
		if ck, err := r.Cookie(sessionCookie); err == nil {
			cred = "cookie:" + ck.Value
		}
	}
	key := sha256.Sum256([]byte(cred))
	now := time.Now()
	c.mu.Lock()
	if res, ok := c.m[key]; ok && now.Sub(res.at) < wsRecheck {
		c.mu.Unlock()
		return res.why
	}
	c.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	why := ended(cctx, r)
	cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[[32]byte]credResult)
	}
	if len(c.m) >= 10_000 { // forget what is stale before growing
		for k, res := range c.m {
			if now.Sub(res.at) >= wsRecheck {
				delete(c.m, k)
			}
		}
	}
	c.m[key] = credResult{why: why, at: now}
	return why
}
