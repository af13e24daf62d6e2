package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Region is a regional service's registration: /regions/{id}, kept alive by
// a lease so it disappears when the region stops answering.
type Region struct {
	ID        string            `json:"id"`
	APIURL    string            `json:"api_url,omitempty"`
	Member    string            `json:"member,omitempty"`
	StartedAt time.Time         `json:"started_at"`
	Services  map[string]string `json:"services,omitempty"` // service -> state
}

// RegisterRegion writes the region under a lease of ttl seconds and keeps it
// alive until ctx ends. It returns when the first registration is written;
// keepalive failures are retried in the background.
func (s *Store) RegisterRegion(ctx context.Context, r Region, ttl int64) error {
	if !validName(r.ID, 64) {
		return fmt.Errorf("%w: region id %q: use letters, digits, '.', '-' or '_'", ErrInvalid, r.ID)
	}
	register := func() (<-chan *clientv3.LeaseKeepAliveResponse, error) {
		if s.keepAlivesHalted() {
			return nil, errKeepAlivesHalted
		}
		lease, err := s.cli.Grant(ctx, ttl)
		if err != nil {
			return nil, fmt.Errorf("grant region lease: %w", err)
		}
		if _, err := s.cli.Put(ctx, regionKey(r.ID), mustJSON(r), clientv3.WithLease(lease.ID)); err != nil {
			return nil, fmt.Errorf("register region %s: %w", r.ID, err)
		}
		if err := s.RememberRegion(ctx, r.ID); err != nil { // store/regions_known.go
			return nil, err
		}
		return s.keepAlive(ctx, lease.ID)
	}
	ka, err := register()
	if err != nil {
		return err
	}
	go func() {
		for {
			for range ka { //nolint:revive // drain keepalive answers
			}
			if ctx.Err() != nil {
				return
			}
			if s.keepAlivesHalted() {
				s.log.Info("store: region lease keepalive stopped: this member is leaving its cluster or stopping", "region", r.ID)
			} else {
				s.log.Warn("store: region lease lost, registering again", "region", r.ID)
			}
			for {
				if ka, err = register(); err == nil {
					break
				}
				if !errors.Is(err, errKeepAlivesHalted) {
					s.log.Warn("store: region registration failed", "region", r.ID, "error", err)
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
		}
	}()
	return nil
}

// ListRegions returns the live regions.
func (s *Store) ListRegions(ctx context.Context) ([]Region, error) {
	resp, err := s.cli.Get(ctx, prefixRegions, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list regions: %w", err)
	}
	out := make([]Region, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var r Region
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			s.log.Warn("store: undecodable region", "key", string(kv.Key), "error", err)
			continue
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
