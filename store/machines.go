package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Machine is a machine that booted lpmos's agent without a task:
// /machines/{mac}.
type Machine struct {
	MAC       string         `json:"mac"`
	RegionID  string         `json:"region_id"`
	Hardware  *wire.Hardware `json:"hardware,omitempty"`
	FirstSeen time.Time      `json:"first_seen"`
	LastSeen  time.Time      `json:"last_seen"`
}

// RecordMachine stores or refreshes a discovered machine.
func (s *Store) RecordMachine(ctx context.Context, region, mac string, hw *wire.Hardware) (Machine, error) {
	mac, err := ParseMAC(mac)
	if err != nil {
		return Machine{}, err
	}
	now := time.Now().UTC()
	m := Machine{MAC: mac, RegionID: region, Hardware: hw, FirstSeen: now, LastSeen: now}
	if old, err := s.GetMachine(ctx, mac); err == nil {
		m.FirstSeen = old.FirstSeen
		if hw == nil {
			m.Hardware = old.Hardware
		}
	}
	if _, err := s.cli.Put(ctx, machineKey(mac), mustJSON(m)); err != nil {
		return Machine{}, fmt.Errorf("record machine %s: %w", mac, err)
	}
	return m, nil
}

// GetMachine reads one discovered machine.
func (s *Store) GetMachine(ctx context.Context, mac string) (Machine, error) {
	mac, err := ParseMAC(mac)
	if err != nil {
		return Machine{}, err
	}
	resp, err := s.cli.Get(ctx, machineKey(mac))
	if err != nil {
		return Machine{}, fmt.Errorf("read machine %s: %w", mac, err)
	}
	if len(resp.Kvs) == 0 {
		return Machine{}, fmt.Errorf("%w: machine %s", ErrNotFound, mac)
	}
	var m Machine
	if err := json.Unmarshal(resp.Kvs[0].Value, &m); err != nil {
		return Machine{}, fmt.Errorf("decode machine %s: %w", mac, err)
	}
	return m, nil
}

// ListMachines returns the discovered machines, most recently seen first.
func (s *Store) ListMachines(ctx context.Context) ([]Machine, error) {
	resp, err := s.cli.Get(ctx, prefixMachines, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list machines: %w", err)
	}
	out := make([]Machine, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var m Machine
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			s.log.Warn("store: undecodable machine", "key", string(kv.Key), "error", err)
			continue
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastSeen.After(out[j].LastSeen) })
	return out, nil
}

// DeleteMachine forgets a discovered machine and its discovery session.
func (s *Store) DeleteMachine(ctx context.Context, mac string) error {
	mac, err := ParseMAC(mac)
	if err != nil {
		return err
	}
	// Its discovery session goes too: a live agent reports again and
	// shows up anew.
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpDelete(machineKey(mac)), clientv3.OpDelete(discoveryKey(mac))).Commit()
	if err != nil {
		return fmt.Errorf("delete machine %s: %w", mac, err)
	}
	if resp.Responses[0].GetResponseDeleteRange().Deleted == 0 {
		return fmt.Errorf("%w: machine %s", ErrNotFound, mac)
	}
	return nil
}
