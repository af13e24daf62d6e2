package store

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// DeleteTask removes an ended task (completed, failed, cancelled) with its
// hardware, progress and history, and frees its MAC's index entry when it
// still points at it. An active task is refused (ErrConflict naming its
// status): cancel it first. The delete is one transaction guarded by the
// status revision, so a concurrent retry wins or the delete does, never half.
func (s *Store) DeleteTask(ctx context.Context, id string) (Task, error) {
	for range maxTxnRetries {
		t, err := s.GetTask(ctx, id)
		if err != nil {
			return Task{}, err
		}
		if t.Status.Status.Active() {
			return t, fmt.Errorf("%w: task %s is %s: only an ended task (completed, failed, cancelled) can be deleted; cancel it first", ErrConflict, id, t.Status.Status)
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(statusKey(id)), "=", t.Revision)}
		ops := []clientv3.Op{clientv3.OpDelete(taskPrefix(id), clientv3.WithPrefix())}
		idx, err := s.cli.Get(ctx, macIndexKey(t.Spec.TargetMAC))
		if err != nil {
			return Task{}, fmt.Errorf("read MAC index: %w", err)
		}
		if len(idx.Kvs) == 1 && string(idx.Kvs[0].Value) == id {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(macIndexKey(t.Spec.TargetMAC)), "=", idx.Kvs[0].ModRevision))
			ops = append(ops, clientv3.OpDelete(macIndexKey(t.Spec.TargetMAC)))
		}
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return Task{}, fmt.Errorf("delete task %s: %w", id, err)
		}
		if resp.Succeeded {
			return t, nil
		}
	}
	return Task{}, fmt.Errorf("delete task %s: %w: it keeps changing", id, ErrConflict)
}
