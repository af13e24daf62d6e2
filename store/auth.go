package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"

	"fmt"
	"github.com/lpmos/lpmos/agent/wire"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// NewSecret returns a random 256-bit token in URL-safe base64 (safe on a
// kernel command line and in an HTTP header).
func NewSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func hashSecret(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func secretMatches(token, hash string) bool {
	return subtle.ConstantTimeCompare([]byte(hashSecret(token)), []byte(hash)) == 1
}

// EnsureAdminToken creates the operator token on first start: only its hash
// goes to etcd. It returns the new token and true, or "" and false when one
// already exists (its plain text is then only in the file it was given to).
func (s *Store) EnsureAdminToken(ctx context.Context) (string, bool, error) {
	token := NewSecret()
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(keyAdminToken), "=", 0)).
		Then(clientv3.OpPut(keyAdminToken, hashSecret(token))).Commit()
	if err != nil {
		return "", false, fmt.Errorf("create admin token: %w", err)
	}
	if !resp.Succeeded {
		return "", false, nil
	}
	return token, true, nil
}

// RotateAdminToken replaces the admin token and returns the new one.
func (s *Store) RotateAdminToken(ctx context.Context) (string, error) {
	token := NewSecret()
	if _, err := s.cli.Put(ctx, keyAdminToken, hashSecret(token)); err != nil {
		return "", fmt.Errorf("rotate admin token: %w", err)
	}
	return token, nil
}

// CheckAdminToken compares a presented token with the stored hash in
// constant time.
func (s *Store) CheckAdminToken(ctx context.Context, token string) (bool, error) {
	if token == "" {
		return false, nil
	}
	resp, err := s.cli.Get(ctx, keyAdminToken)
	if err != nil {
		return false, fmt.Errorf("read admin token: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return false, nil
	}
	return secretMatches(token, string(resp.Kvs[0].Value)), nil
}

// agentToken is /tasks/{id}/agent-token: the hash of the token handed to the
// agent for one attempt.
type agentToken struct {
	SHA256  string `json:"sha256"`
	Attempt int    `json:"attempt"`
}

// CheckAgentToken reports whether token opens task id in its current
// attempt. The token key is deleted when the task ends or is retried, so
// old tokens die with their attempt.
func (s *Store) CheckAgentToken(ctx context.Context, id, token string) (bool, error) {
	if token == "" || !validTaskID(id) {
		return false, nil
	}
	resp, err := s.cli.Get(ctx, tokenKey(id))
	if err != nil {
		return false, fmt.Errorf("read agent token of %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return false, nil
	}
	var at agentToken
	if err := json.Unmarshal(resp.Kvs[0].Value, &at); err != nil {
		return false, fmt.Errorf("decode agent token of %s: %w", id, err)
	}
	return secretMatches(token, at.SHA256), nil
}

// ClaimTask moves a pending task to ready for its region and stores the
// hash of the agent token for this attempt, in one transaction.
func (s *Store) ClaimTask(ctx context.Context, id, token string) (Task, error) {
	return s.transition(ctx, id, wire.StatusReady, "claimed by region", func(t Task) ([]clientv3.Op, []clientv3.Cmp, error) {
		return []clientv3.Op{clientv3.OpPut(tokenKey(id), mustJSON(agentToken{SHA256: hashSecret(token), Attempt: t.Status.Attempt}))}, nil, nil
	})
}

// SetAgentToken replaces the agent token hash of an active task (a region
// that lost the secret the token was derived from mints a new one).
func (s *Store) SetAgentToken(ctx context.Context, id, token string) error {
	for range maxTxnRetries {
		st, rev, err := s.status(ctx, id)
		if err != nil {
			return err
		}
		if !st.Status.Active() {
			return &TransitionError{ID: id, From: st.Status, To: st.Status}
		}
		resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(statusKey(id)), "=", rev)).
			Then(clientv3.OpPut(tokenKey(id), mustJSON(agentToken{SHA256: hashSecret(token), Attempt: st.Attempt}))).Commit()
		if err != nil {
			return fmt.Errorf("store agent token of %s: %w", id, err)
		}
		if resp.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("store agent token of %s: %w: too much contention", id, ErrConflict)
}
