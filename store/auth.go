package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"time"

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

// ClaimTask moves a pending task to ready for its region. When boot is not
// empty it is stored, in the same transaction, as the task's boot token
// (valid DefaultBootTokenTTL); the region itself mints boot tokens per iPXE
// script (IssueBootToken) and passes "".
func (s *Store) ClaimTask(ctx context.Context, id, boot string) (Task, error) {
	return s.transition(ctx, id, wire.StatusReady, "claimed by region", func(t Task) ([]clientv3.Op, []clientv3.Cmp, error) {
		if boot == "" {
			return nil, nil, nil
		}
		now := time.Now().UTC()
		bt := bootToken{SHA256: hashSecret(boot), Attempt: t.Status.Attempt, IssuedAt: now, Expires: now.Add(DefaultBootTokenTTL)}
		return []clientv3.Op{clientv3.OpPut(bootstrapKey(id), mustJSON(bt))}, nil, nil
	})
}
