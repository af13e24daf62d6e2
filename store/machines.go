package store

import (
	"context"
	"encoding/json"
	"errors"
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

// ErrFull refuses a new discovered machine when the cap is reached.
var ErrFull = errors.New("discovered machines at their cap")

// MachineSeenRefresh is how stale LastSeen may get before an unchanged
// report rewrites the machine anyway (at most one write per MAC this often).
const MachineSeenRefresh = 10 * time.Minute

// RecordMachine stores or refreshes a discovered machine.
func (s *Store) RecordMachine(ctx context.Context, region, mac string, hw *wire.Hardware) (Machine, error) {
	m, _, err := s.RecordMachineLimited(ctx, region, mac, hw, 0)
	return m, err
}

// RecordMachineLimited stores or refreshes a discovered machine. A report
// equal to the stored one (collected_at aside) from the same region is not
// written again (no etcd write, no revision) unless LastSeen is older than
// MachineSeenRefresh; written says whether etcd was written. With max > 0, a
// new MAC is refused with ErrFull when max machines are stored already; a
// known one is always updated. The count is not atomic with the write:
// callers serialize their new-machine writes (concurrent writers in other
// processes can overshoot by one each).
func (s *Store) RecordMachineLimited(ctx context.Context, region, mac string, hw *wire.Hardware, max int) (m Machine, written bool, err error) {
	mac, err = ParseMAC(mac)
	if err != nil {
		return Machine{}, false, err
	}
	now := time.Now().UTC()
	m = Machine{MAC: mac, RegionID: region, Hardware: hw, FirstSeen: now, LastSeen: now}
	old, err := s.GetMachine(ctx, mac)
	switch {
	case err == nil:
		m.FirstSeen = old.FirstSeen
		if hw == nil {
			m.Hardware = old.Hardware
		}
		if old.RegionID == region && sameHardware(old.Hardware, m.Hardware) && now.Sub(old.LastSeen) < MachineSeenRefresh {
			return old, false, nil
		}
	case !errors.Is(err, ErrNotFound):
		return Machine{}, false, err
	case max > 0:
		resp, err := s.cli.Get(ctx, prefixMachines, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return Machine{}, false, fmt.Errorf("count machines: %w", err)
		}
		if resp.Count >= int64(max) {
			return Machine{}, false, fmt.Errorf("%w: %d stored, at most %d: machine %s not recorded (delete old ones, or raise --max-discovered)", ErrFull, resp.Count, max, mac)
		}
	}
	if _, err := s.cli.Put(ctx, machineKey(mac), mustJSON(m)); err != nil {
		return Machine{}, false, fmt.Errorf("record machine %s: %w", mac, err)
	}
	return m, true, nil
}

// sameHardware compares two reports ignoring when they were collected.
func sameHardware(a, b *wire.Hardware) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, y := *a, *b
	x.CollectedAt, y.CollectedAt = time.Time{}, time.Time{}
	return mustJSON(x) == mustJSON(y)
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
