package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Dashboard sessions live in etcd, so every member accepts a session any
// member opened, and a restart of `serve` keeps them. The key is the
// SHA-256 of the session id (the cookie): a reader of etcd (or of a
// snapshot) learns no usable session. Each record names the credential
// that opened it and that credential's revision at login:
//
//   - opened with the admin token: the admin token key's ModRevision. A
//     rotation (a new Put) changes it, so every admin-derived session ends
//     at once, on every member, without a sweep.
//   - opened with a named operator token: that token key's CreateRevision.
//     Removing the token (or re-creating one with the same name) ends its
//     sessions the same way.
//
// A record outlives its expiry by DashboardSessionGrace (an etcd lease
// removes it then), so a browser coming back is told its session expired
// rather than that it never had one.
const (
	prefixDashSessions = "/auth/sessions/"
	// DashboardSessionGrace is how long an ended session's record stays to
	// explain itself.
	DashboardSessionGrace = 24 * time.Hour
	// MaxDashboardSessions caps the records; at the cap a login forgets
	// the oldest session.
	MaxDashboardSessions = 10000
)

// Session credential kinds (DashboardSession.Via).
const (
	ViaAdminToken    = "admin-token"
	ViaOperatorToken = "operator-token"
)

// ErrSessionEnded is returned (wrapped, with the cause) for a session that
// existed but is no longer valid: expired, signed out, or its credential
// was rotated or removed.
var ErrSessionEnded = errors.New("dashboard session ended")

// DashboardSession is a browser session of the dashboard.
type DashboardSession struct {
	// Actor is who acts through the session: "operator" for the admin
	// token, else the named operator token's name (task events say
	// "approved by <actor>").
	Actor     string    `json:"actor"`
	Kind      string    `json:"kind"` // admin or read-only
	Via       string    `json:"via"`  // admin-token or operator-token
	CredRev   int64     `json:"cred_rev"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Credential is what a login presented: the admin token or a named
// operator token (CheckCredential finds which).
type Credential struct {
	Actor string
	Kind  string // admin or read-only
	Via   string
	key   string // the etcd key of the credential
	rev   int64  // its ModRevision (admin token) or CreateRevision (operator token)
}

// CheckCredential checks a token a person signs in with: the admin token
// or a named operator token (lpo_...). ok is false for a wrong, rotated or
// removed one.
func (s *Store) CheckCredential(ctx context.Context, token string) (Credential, bool, error) {
	if token == "" {
		return Credential{}, false, nil
	}
	if name, secret, ok := splitOperatorToken(token); ok {
		resp, err := s.cli.Get(ctx, prefixOperators+name)
		if err != nil {
			return Credential{}, false, fmt.Errorf("read operator token: %w", err)
		}
		if len(resp.Kvs) == 0 {
			return Credential{}, false, nil
		}
		var rec operatorRecord
		if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
			return Credential{}, false, fmt.Errorf("decode operator token: %w", err)
		}
		if !secretMatches(secret, rec.SHA256) {
			return Credential{}, false, nil
		}
		return Credential{Actor: name, Kind: rec.Kind, Via: ViaOperatorToken, key: prefixOperators + name, rev: resp.Kvs[0].CreateRevision}, true, nil
	}
	resp, err := s.cli.Get(ctx, keyAdminToken)
	if err != nil {
		return Credential{}, false, fmt.Errorf("read admin token: %w", err)
	}
	if len(resp.Kvs) == 0 || !secretMatches(token, string(resp.Kvs[0].Value)) {
		return Credential{}, false, nil
	}
	return Credential{Actor: "operator", Kind: OperatorAdmin, Via: ViaAdminToken, key: keyAdminToken, rev: resp.Kvs[0].ModRevision}, true, nil
}

// splitOperatorToken splits lpo_<name>.<secret>.
func splitOperatorToken(token string) (name, secret string, ok bool) {
	rest, found := strings.CutPrefix(token, OperatorTokenPrefix)
	i := strings.LastIndexByte(rest, '.')
	if !found || i <= 0 || !validName(rest[:i], 64) {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

func dashSessionKey(id string) string { return prefixDashSessions + hashSecret(id) }

// CreateDashboardSession opens a session for cred lasting ttl and returns
// its id (the cookie value; only its hash is stored). It fails with
// ErrConflict when cred changed since it was checked (rotated or removed
// meanwhile).
func (s *Store) CreateDashboardSession(ctx context.Context, cred Credential, ttl time.Duration) (string, DashboardSession, error) {
	if cred.key == "" {
		return "", DashboardSession{}, fmt.Errorf("%w: no checked credential", ErrInvalid)
	}
	if err := s.capDashboardSessions(ctx); err != nil {
		return "", DashboardSession{}, err
	}
	now := time.Now().UTC()
	sess := DashboardSession{Actor: cred.Actor, Kind: cred.Kind, Via: cred.Via, CredRev: cred.rev, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	lease, err := s.cli.Grant(ctx, int64((ttl+DashboardSessionGrace)/time.Second))
	if err != nil {
		return "", DashboardSession{}, fmt.Errorf("open dashboard session: lease: %w", err)
	}
	revCmp := clientv3.Compare(clientv3.ModRevision(cred.key), "=", cred.rev)
	if cred.Via == ViaOperatorToken {
		revCmp = clientv3.Compare(clientv3.CreateRevision(cred.key), "=", cred.rev)
	}
	id := NewSecret()
	resp, err := s.cli.Txn(ctx).If(revCmp).
		Then(clientv3.OpPut(dashSessionKey(id), mustJSON(sess), clientv3.WithLease(lease.ID))).Commit()
	if err != nil {
		return "", DashboardSession{}, fmt.Errorf("open dashboard session: %w", err)
	}
	if !resp.Succeeded {
		_, _ = s.cli.Revoke(ctx, lease.ID)
		return "", DashboardSession{}, fmt.Errorf("%w: the token changed while signing in (rotated or removed): sign in again", ErrConflict)
	}
	return id, sess, nil
}

// capDashboardSessions forgets the oldest session when the cap is reached.
func (s *Store) capDashboardSessions(ctx context.Context) error {
	resp, err := s.cli.Get(ctx, prefixDashSessions, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("count dashboard sessions: %w", err)
	}
	if resp.Count < MaxDashboardSessions {
		return nil
	}
	old, err := s.cli.Get(ctx, prefixDashSessions, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(resp.Count-MaxDashboardSessions+1))
	if err != nil {
		return fmt.Errorf("find the oldest dashboard sessions: %w", err)
	}
	for _, kv := range old.Kvs {
		if _, err := s.cli.Delete(ctx, string(kv.Key)); err != nil {
			return fmt.Errorf("forget an old dashboard session: %w", err)
		}
	}
	return nil
}

// CheckDashboardSession returns the live session id names. A session that
// ended is an ErrSessionEnded naming the cause (expired, admin token
// rotated, operator token removed); an unknown id is ErrNotFound.
func (s *Store) CheckDashboardSession(ctx context.Context, id string) (DashboardSession, error) {
	if id == "" {
		return DashboardSession{}, fmt.Errorf("%w: no session", ErrNotFound)
	}
	// The session and the admin token in one read; an operator token's
	// record is read after (its key is in the session).
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(dashSessionKey(id)), clientv3.OpGet(keyAdminToken)).Commit()
	if err != nil {
		return DashboardSession{}, fmt.Errorf("read dashboard session: %w", err)
	}
	sk := resp.Responses[0].GetResponseRange().Kvs
	if len(sk) == 0 {
		return DashboardSession{}, fmt.Errorf("%w: no such session", ErrNotFound)
	}
	var sess DashboardSession
	if err := json.Unmarshal(sk[0].Value, &sess); err != nil {
		return DashboardSession{}, fmt.Errorf("decode dashboard session: %w", err)
	}
	return sess, s.validateDashboardSession(ctx, sess, resp.Responses[1].GetResponseRange().Kvs)
}

// ValidateDashboardSession checks a session record kept elsewhere (a
// control plane's own memory, while etcd refuses writes): its expiry and
// its credential's revision, as CheckDashboardSession does.
func (s *Store) ValidateDashboardSession(ctx context.Context, sess DashboardSession) error {
	resp, err := s.cli.Get(ctx, keyAdminToken)
	if err != nil {
		return fmt.Errorf("read admin token: %w", err)
	}
	return s.validateDashboardSession(ctx, sess, resp.Kvs)
}

// LocalDashboardSession makes a session for cred without storing it (the
// caller keeps it: etcd refused the write, NOSPACE).
func LocalDashboardSession(cred Credential, ttl time.Duration) (string, DashboardSession) {
	now := time.Now().UTC()
	return NewSecret(), DashboardSession{Actor: cred.Actor, Kind: cred.Kind, Via: cred.Via, CredRev: cred.rev, CreatedAt: now, ExpiresAt: now.Add(ttl)}
}

func (s *Store) validateDashboardSession(ctx context.Context, sess DashboardSession, admin []*mvccpb.KeyValue) error {
	if now := time.Now(); now.After(sess.ExpiresAt) {
		return fmt.Errorf("%w: it expired at %s", ErrSessionEnded, sess.ExpiresAt.Format(time.RFC3339))
	}
	switch sess.Via {
	case ViaAdminToken:
		if len(admin) == 0 || admin[0].ModRevision != sess.CredRev {
			return fmt.Errorf("%w: the admin token was rotated; sign in with the new one", ErrSessionEnded)
		}
	case ViaOperatorToken:
		or, err := s.cli.Get(ctx, prefixOperators+sess.Actor)
		if err != nil {
			return fmt.Errorf("read operator token: %w", err)
		}
		if len(or.Kvs) == 0 || or.Kvs[0].CreateRevision != sess.CredRev {
			return fmt.Errorf("%w: operator token %q was removed", ErrSessionEnded, sess.Actor)
		}
	default:
		return fmt.Errorf("%w: unknown credential kind %q", ErrSessionEnded, sess.Via)
	}
	return nil
}

// EndDashboardSession signs a session out (no error when it is unknown).
func (s *Store) EndDashboardSession(ctx context.Context, id string) error {
	if id == "" {
		return nil
	}
	if _, err := s.cli.Delete(ctx, dashSessionKey(id)); err != nil {
		return fmt.Errorf("end dashboard session: %w", err)
	}
	return nil
}
