package ui

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/lpmos/lpmos/store"
)

// localSessions holds the dashboard sessions opened while etcd refused
// writes (NOSPACE): an operator must still sign in to see the alarm and
// act on it. They are valid on this process only and until it restarts;
// expiry, admin token rotation and operator token removal end them as they
// end the sessions kept in etcd (store.ValidateDashboardSession).
type localSessions struct {
	mu sync.Mutex
	m  map[string]store.DashboardSession
}

// maxLocalSessions bounds localSessions; past it the oldest is forgotten.
const maxLocalSessions = 1000

func (l *localSessions) put(id string, sess store.DashboardSession) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]store.DashboardSession{}
	}
	for len(l.m) >= maxLocalSessions {
		var oldest string
		var at time.Time
		for k, v := range l.m {
			if oldest == "" || v.CreatedAt.Before(at) {
				oldest, at = k, v.CreatedAt
			}
		}
		delete(l.m, oldest)
	}
	l.m[id] = sess
}

func (l *localSessions) get(id string) (store.DashboardSession, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sess, ok := l.m[id]
	return sess, ok
}

func (l *localSessions) delete(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, id)
}

// checkSession finds session id in etcd, else among this process's local
// sessions, and validates it.
func (s *Server) checkSession(ctx context.Context, id string) (store.DashboardSession, error) {
	sess, err := s.cfg.Store.CheckDashboardSession(ctx, id)
	if !errors.Is(err, store.ErrNotFound) {
		return sess, err
	}
	local, ok := s.local.get(id)
	if !ok {
		return sess, err
	}
	if verr := s.cfg.Store.ValidateDashboardSession(ctx, local); verr != nil {
		if errors.Is(verr, store.ErrSessionEnded) {
			s.local.delete(id)
		}
		return local, verr
	}
	return local, nil
}

// openSession opens a session for cred: in etcd, or, while etcd refuses
// writes (NOSPACE), in this process only.
func (s *Server) openSession(ctx context.Context, cred store.Credential) (string, store.DashboardSession, error) {
	id, sess, err := s.cfg.Store.CreateDashboardSession(ctx, cred, sessionTTL)
	if err == nil || !store.IsNoSpace(err) {
		return id, sess, err
	}
	id, sess = store.LocalDashboardSession(cred, sessionTTL)
	s.local.put(id, sess)
	s.log.Warn("dashboard session kept in this process only: etcd is out of space (NOSPACE); it ends when this process restarts", "actor", sess.Actor)
	return id, sess, nil
}
