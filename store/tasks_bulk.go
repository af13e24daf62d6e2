package store

import (
	"context"
	"fmt"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// bulkPerTxn is how many tasks CreateTasks writes per transaction: four
// operations and one MAC guard each, under etcd's 128 per transaction.
const bulkPerTxn = 32

// CreateTasks creates a pending task for each spec, as CreateTask does
// (the same keys, the same MAC guard), bulkPerTxn tasks per transaction:
// fleet imports and tests of thousands of tasks take seconds, not one
// fsync per task. Two specs for one MAC are refused (ErrConflict) before
// anything is written; a transaction whose guard fails (a MAC taken
// meanwhile) falls back to CreateTask for each of its specs, so the
// result names every task created before an error.
func (s *Store) CreateTasks(ctx context.Context, specs []Spec) ([]Task, error) {
	seen := make(map[string]bool, len(specs))
	for i := range specs {
		if err := specs[i].Validate(); err != nil {
			return nil, fmt.Errorf("spec %d: %w", i, err)
		}
		if seen[specs[i].TargetMAC] {
			return nil, fmt.Errorf("spec %d: %w: MAC %s is in the list twice", i, ErrConflict, specs[i].TargetMAC)
		}
		seen[specs[i].TargetMAC] = true
	}
	// One read of the MAC index: a MAC without an entry needs no read to
	// guard (its entry must still not exist at commit).
	idx, err := s.cli.Get(ctx, prefixMACIndex, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("read MAC index: %w", err)
	}
	indexed := make(map[string]bool, len(idx.Kvs))
	for _, kv := range idx.Kvs {
		indexed[string(kv.Key)] = true
	}
	out := make([]Task, 0, len(specs))
	for len(specs) > 0 {
		chunk := specs[:min(bulkPerTxn, len(specs))]
		specs = specs[len(chunk):]
		var (
			cmps  []clientv3.Cmp
			ops   []clientv3.Op
			tasks []Task
		)
		now := time.Now().UTC()
		for _, spec := range chunk {
			guard := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(macIndexKey(spec.TargetMAC)), "=", 0)}
			if indexed[macIndexKey(spec.TargetMAC)] {
				var err error
				if guard, err = s.macFreeGuard(ctx, spec.TargetMAC, ""); err != nil {
					return out, err
				}
			}
			spec.CreatedAt = now
			id := newID()
			st := StatusRecord{Status: wire.StatusPending, UpdatedAt: now, Attempt: 1}
			cmps = append(cmps, guard...)
			ops = append(ops,
				clientv3.OpPut(specKey(id), mustJSON(spec)),
				clientv3.OpPut(statusKey(id), statusValue(st)),
				clientv3.OpPut(macIndexKey(spec.TargetMAC), id),
				eventOp(id, Event{At: now, Kind: "status", To: wire.StatusPending, Message: "task created"}),
			)
			tasks = append(tasks, Task{ID: id, Spec: spec, Status: st})
		}
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return out, fmt.Errorf("create tasks: %w", err)
		}
		if !resp.Succeeded {
			for _, spec := range chunk {
				t, err := s.CreateTask(ctx, spec)
				if err != nil {
					return out, err
				}
				out = append(out, t)
			}
			continue
		}
		for i := range tasks {
			tasks[i].Revision = resp.Header.Revision
		}
		out = append(out, tasks...)
	}
	return out, nil
}
