package store

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// GetTaskRev is GetTask plus the revision of the read: a watch from
// revision+1 misses nothing. (The task's own Revision is its status's last
// change, which may be older than etcd's compacted history.)
func (s *Store) GetTaskRev(ctx context.Context, id string) (Task, int64, error) {
	if !validTaskID(id) {
		return Task{}, 0, fmt.Errorf("%w: task %s", ErrNotFound, id)
	}
	resp, err := s.cli.Get(ctx, taskPrefix(id), clientv3.WithPrefix())
	if err != nil {
		return Task{}, 0, fmt.Errorf("read task %s: %w", id, err)
	}
	tasks := assembleTasks(resp.Kvs, s.log)
	if len(tasks) == 0 {
		return Task{}, 0, fmt.Errorf("%w: task %s", ErrNotFound, id)
	}
	return tasks[0], resp.Header.Revision, nil
}
