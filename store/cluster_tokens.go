package store

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// JoinTokenPrefix starts every join token:
// LPM10<sha256 of the CA DER, hex>::<token id>.<secret> (k3s style).
const JoinTokenPrefix = "LPM10"

// JoinToken is a created join token; Token is shown once.
type JoinToken struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	SingleUse bool      `json:"single_use"`
}

// joinTokenRecord is /cluster/join-tokens/{id}: only the secret's hash, on
// a lease that ends with the token.
type joinTokenRecord struct {
	SHA256    string    `json:"sha256"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	SingleUse bool      `json:"single_use"`
	UsedBy    string    `json:"used_by,omitempty"`   // peer URL of the join that used a single-use token
	RevokedAt time.Time `json:"revoked_at,omitzero"` // `lpmos token rm`: kept until its lease ends, so a join hears why
}

func joinTokenKey(id string) string { return prefixJoinTokens + id }

// CreateJoinToken makes a join token valid for ttl.
func (s *Store) CreateJoinToken(ctx context.Context, ttl time.Duration, singleUse bool) (JoinToken, error) {
	if s.ca.Load() == nil {
		return JoinToken{}, ErrNotEmbedded
	}
	if ttl < 10*time.Second || ttl > 30*24*time.Hour {
		return JoinToken{}, fmt.Errorf("%w: token ttl %s: use between 10s and 720h", ErrInvalid, ttl)
	}
	var idb [6]byte
	_, _ = rand.Read(idb[:])
	id := hex.EncodeToString(idb[:])
	secret := NewSecret()
	now := time.Now().UTC()
	rec := joinTokenRecord{SHA256: hashSecret(secret), CreatedAt: now, ExpiresAt: now.Add(ttl), SingleUse: singleUse}
	lease, err := s.cli.Grant(ctx, int64((ttl+time.Minute)/time.Second))
	if err != nil {
		return JoinToken{}, fmt.Errorf("create join token: %w", err)
	}
	if _, err := s.cli.Put(ctx, joinTokenKey(id), mustJSON(rec), clientv3.WithLease(lease.ID)); err != nil {
		return JoinToken{}, fmt.Errorf("create join token: %w", err)
	}
	return JoinToken{
		ID:        id,
		Token:     FormatJoinToken(s.ca.Load().Fingerprint(), id, secret),
		ExpiresAt: rec.ExpiresAt,
		SingleUse: singleUse,
	}, nil
}

// FormatJoinToken builds the token string.
func FormatJoinToken(caSHA256, id, secret string) string {
	return JoinTokenPrefix + caSHA256 + "::" + id + "." + secret
}

// ParseJoinToken splits a token into the CA pin, token id and secret.
func ParseJoinToken(tok string) (caSHA256, id, secret string, err error) {
	bad := errors.New("malformed join token: want LPM10<ca sha256>::<id>.<secret> as printed by `lpmos token create`")
	rest, ok := strings.CutPrefix(strings.TrimSpace(tok), JoinTokenPrefix)
	if !ok {
		return "", "", "", bad
	}
	caSHA256, cred, ok := strings.Cut(rest, "::")
	if !ok || len(caSHA256) != 64 {
		return "", "", "", bad
	}
	if _, err := hex.DecodeString(caSHA256); err != nil {
		return "", "", "", bad
	}
	id, secret, ok = strings.Cut(cred, ".")
	if !ok || id == "" || secret == "" {
		return "", "", "", bad
	}
	return strings.ToLower(caSHA256), id, secret, nil
}

// JoinProof is what a joiner sends instead of its secret: HMAC-SHA256 of
// its CSR (DER) keyed by the secret's sha256.
func JoinProof(secret string, csrDER []byte) string {
	return joinProofWithHash(hashSecret(secret), csrDER)
}

func joinProofWithHash(secretHash string, csrDER []byte) string {
	m := hmac.New(sha256.New, []byte(secretHash))
	m.Write(csrDER)
	return hex.EncodeToString(m.Sum(nil))
}

// checkJoinToken verifies a join proof in constant time and the token's
// expiry; it returns the record and its mod revision.
func (s *Store) checkJoinToken(ctx context.Context, id, proof string, csrDER []byte) (joinTokenRecord, int64, error) {
	denied := fmt.Errorf("%w: unknown or expired join token: create a new one with `lpmos token create` on a member", ErrJoinDenied)
	if !validName(id, 64) {
		return joinTokenRecord{}, 0, denied
	}
	resp, err := s.cli.Get(ctx, joinTokenKey(id))
	if err != nil {
		return joinTokenRecord{}, 0, fmt.Errorf("read join token: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return joinTokenRecord{}, 0, denied
	}
	var rec joinTokenRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return joinTokenRecord{}, 0, fmt.Errorf("decode join token: %w", err)
	}
	want := joinProofWithHash(rec.SHA256, csrDER)
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(proof))) {
		return joinTokenRecord{}, 0, fmt.Errorf("%w: wrong join token secret: copy the whole token printed by `lpmos token create`", ErrJoinDenied)
	}
	if !rec.RevokedAt.IsZero() {
		return joinTokenRecord{}, 0, fmt.Errorf("%w: the join token %s was revoked at %s (`lpmos token rm`): create a new one with `lpmos token create`", ErrJoinDenied, id, rec.RevokedAt.Format(time.RFC3339))
	}
	if time.Now().After(rec.ExpiresAt) {
		return joinTokenRecord{}, 0, fmt.Errorf("%w: the join token expired at %s: create a new one with `lpmos token create`", ErrJoinDenied, rec.ExpiresAt.Format(time.RFC3339))
	}
	return rec, resp.Kvs[0].ModRevision, nil
}
