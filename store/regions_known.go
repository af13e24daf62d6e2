package store

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// prefixKnownRegions keeps, without a lease, every region id that ever
// registered: /regions-known/{id} -> first registration time. Task
// creation accepts a region that is live or known, so a region that is
// restarting still takes tasks while a typo ("mars") does not.
const prefixKnownRegions = "/regions-known/"

// RememberRegion records id as a known region (RegisterRegion calls it;
// tests and imports may call it for a region that is not running).
func (s *Store) RememberRegion(ctx context.Context, id string) error {
	key := prefixKnownRegions + id
	_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, time.Now().UTC().Format(time.RFC3339))).Commit()
	if err != nil {
		return fmt.Errorf("record region %s as known: %w", id, err)
	}
	return nil
}

// KnownRegions returns the ids of every region that is live or has ever
// registered with this cluster, sorted.
func (s *Store) KnownRegions(ctx context.Context) ([]string, error) {
	resp, err := s.cli.Get(ctx, prefixKnownRegions, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list known regions: %w", err)
	}
	seen := map[string]bool{}
	for _, kv := range resp.Kvs {
		seen[strings.TrimPrefix(string(kv.Key), prefixKnownRegions)] = true
	}
	live, err := s.ListRegions(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range live {
		seen[r.ID] = true
	}
	out := make([]string, 0, len(seen))
	for id := range seen {
		out = append(out, id)
	}
	sort.Strings(out)
	return out, nil
}
