package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// JoinTokenInfo is a join token as `lpmos token list` shows it (never its
// secret).
type JoinTokenInfo struct {
	ID        string    `json:"id"`
	SingleUse bool      `json:"single_use"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Used      bool      `json:"used"`
	UsedBy    string    `json:"used_by,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	// State: valid, used, expired or revoked.
	State string `json:"state"`
}

func (r joinTokenRecord) info(id string, now time.Time) JoinTokenInfo {
	in := JoinTokenInfo{ID: id, SingleUse: r.SingleUse, CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt,
		Used: r.UsedBy != "", UsedBy: r.UsedBy, RevokedAt: r.RevokedAt, State: "valid"}
	switch {
	case !r.RevokedAt.IsZero():
		in.State = "revoked"
	case now.After(r.ExpiresAt):
		in.State = "expired"
	case r.SingleUse && r.UsedBy != "":
		in.State = "used"
	}
	return in
}

// ListJoinTokens lists the join tokens the cluster still holds, newest
// first (a token is forgotten a minute after it expires).
func (s *Store) ListJoinTokens(ctx context.Context) ([]JoinTokenInfo, error) {
	resp, err := s.cli.Get(ctx, prefixJoinTokens, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list join tokens: %w", err)
	}
	now := time.Now()
	out := []JoinTokenInfo{}
	for _, kv := range resp.Kvs {
		var rec joinTokenRecord
		if json.Unmarshal(kv.Value, &rec) != nil {
			continue
		}
		out = append(out, rec.info(strings.TrimPrefix(string(kv.Key), prefixJoinTokens), now))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, nil
}

// RevokeJoinToken revokes a join token at once: a join presenting it is
// refused with "revoked". Revoking a revoked token is not an error.
func (s *Store) RevokeJoinToken(ctx context.Context, id string) (JoinTokenInfo, error) {
	if !validName(id, 64) {
		return JoinTokenInfo{}, fmt.Errorf("%w: join token id %q (see `lpmos token list`)", ErrInvalid, id)
	}
	for range 10 {
		resp, err := s.cli.Get(ctx, joinTokenKey(id))
		if err != nil {
			return JoinTokenInfo{}, fmt.Errorf("read join token: %w", err)
		}
		if len(resp.Kvs) == 0 {
			return JoinTokenInfo{}, fmt.Errorf("%w: no join token %q (expired tokens are forgotten; see `lpmos token list`)", ErrNotFound, id)
		}
		var rec joinTokenRecord
		if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
			return JoinTokenInfo{}, fmt.Errorf("decode join token: %w", err)
		}
		if rec.RevokedAt.IsZero() {
			rec.RevokedAt = time.Now().UTC()
		}
		t, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(joinTokenKey(id)), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(joinTokenKey(id), mustJSON(rec), clientv3.WithIgnoreLease())).Commit()
		if err != nil {
			return JoinTokenInfo{}, fmt.Errorf("revoke join token: %w", err)
		}
		if t.Succeeded {
			return rec.info(id, time.Now()), nil
		}
	}
	return JoinTokenInfo{}, fmt.Errorf("%w: join token %q kept changing; try again", ErrConflict, id)
}
