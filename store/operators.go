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

// Named operator tokens: several, each with a name that task events show
// as the actor, revocable one by one; a read-only kind only reads.
const (
	prefixOperators = "/auth/operators/"
	// OperatorTokenPrefix starts every named operator token:
	// lpo_<name>.<secret>.
	OperatorTokenPrefix = "lpo_"
	// OperatorAdmin may do what the admin token does.
	OperatorAdmin = "admin"
	// OperatorReadOnly may only read (GET).
	OperatorReadOnly = "read-only"
)

// OperatorToken is a named operator token; Token is shown once, at
// creation.
type OperatorToken struct {
	Name      string    `json:"name"`
	Kind      string    `json:"kind"` // admin or read-only
	CreatedAt time.Time `json:"created_at"`
	Token     string    `json:"token,omitempty"`
}

type operatorRecord struct {
	SHA256    string    `json:"sha256"`
	Kind      string    `json:"kind"`
	CreatedAt time.Time `json:"created_at"`
}

// CreateOperatorToken makes a named operator token of kind admin or
// read-only; the name must be new.
func (s *Store) CreateOperatorToken(ctx context.Context, name, kind string) (OperatorToken, error) {
	if !validName(name, 64) || name == "operator" {
		return OperatorToken{}, fmt.Errorf("%w: operator token name %q: use letters, digits, '.', '-' or '_' (not \"operator\")", ErrInvalid, name)
	}
	if kind == "" {
		kind = OperatorAdmin
	}
	if kind != OperatorAdmin && kind != OperatorReadOnly {
		return OperatorToken{}, fmt.Errorf("%w: operator token kind %q: use admin or read-only", ErrInvalid, kind)
	}
	secret := NewSecret()
	rec := operatorRecord{SHA256: hashSecret(secret), Kind: kind, CreatedAt: time.Now().UTC()}
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(prefixOperators+name), "=", 0)).
		Then(clientv3.OpPut(prefixOperators+name, mustJSON(rec))).Commit()
	if err != nil {
		return OperatorToken{}, fmt.Errorf("create operator token: %w", err)
	}
	if !resp.Succeeded {
		return OperatorToken{}, fmt.Errorf("%w: an operator token named %q exists: remove it first (`lpmos token operator rm %s`) or pick another name", ErrConflict, name, name)
	}
	return OperatorToken{Name: name, Kind: kind, CreatedAt: rec.CreatedAt, Token: OperatorTokenPrefix + name + "." + secret}, nil
}

// ListOperatorTokens lists the named operator tokens (never the secrets).
func (s *Store) ListOperatorTokens(ctx context.Context) ([]OperatorToken, error) {
	resp, err := s.cli.Get(ctx, prefixOperators, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list operator tokens: %w", err)
	}
	out := []OperatorToken{}
	for _, kv := range resp.Kvs {
		var rec operatorRecord
		if json.Unmarshal(kv.Value, &rec) != nil {
			continue
		}
		out = append(out, OperatorToken{Name: strings.TrimPrefix(string(kv.Key), prefixOperators), Kind: rec.Kind, CreatedAt: rec.CreatedAt})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// RemoveOperatorToken revokes a named operator token at once.
func (s *Store) RemoveOperatorToken(ctx context.Context, name string) error {
	if !validName(name, 64) {
		return fmt.Errorf("%w: operator token name %q", ErrInvalid, name)
	}
	resp, err := s.cli.Delete(ctx, prefixOperators+name)
	if err != nil {
		return fmt.Errorf("remove operator token: %w", err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("%w: no operator token %q (see `lpmos token operator list`)", ErrNotFound, name)
	}
	return nil
}

// CheckOperatorToken finds the named operator token a bearer token is; ok
// is false for an unknown, removed or wrong one.
func (s *Store) CheckOperatorToken(ctx context.Context, token string) (OperatorToken, bool, error) {
	rest, found := strings.CutPrefix(token, OperatorTokenPrefix)
	i := strings.LastIndexByte(rest, '.')
	if !found || i <= 0 || !validName(rest[:i], 64) {
		return OperatorToken{}, false, nil
	}
	name, secret := rest[:i], rest[i+1:]
	resp, err := s.cli.Get(ctx, prefixOperators+name)
	if err != nil {
		return OperatorToken{}, false, fmt.Errorf("read operator token: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return OperatorToken{}, false, nil
	}
	var rec operatorRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return OperatorToken{}, false, fmt.Errorf("decode operator token: %w", err)
	}
	if !secretMatches(secret, rec.SHA256) {
		return OperatorToken{}, false, nil
	}
	return OperatorToken{Name: name, Kind: rec.Kind, CreatedAt: rec.CreatedAt}, true, nil
}

type actorKey struct{}

// WithActor names who acts in ctx (a named operator token's name); task
// events say "approved by <name>".
func WithActor(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, actorKey{}, name)
}

// ActorFrom is the actor WithActor set, or "operator" (the admin token,
// the dashboard).
func ActorFrom(ctx context.Context) string {
	if a, ok := ctx.Value(actorKey{}).(string); ok && a != "" {
		return a
	}
	return "operator"
}
