package store

import (
	"go.etcd.io/etcd/server/v3/storage/mvcc"
)

// FinishedCompaction returns the revision of the embedded member's last
// finished compaction (0: none yet, or an external etcd). A compaction
// reads every old revision and allocates: a heap peak lpmos returns to the
// OS after it (app/memrelease.go).
func (s *Store) FinishedCompaction() (rev int64) {
	if s.etcd == nil || s.closing.Load() {
		return 0
	}
	defer func() {
		if recover() != nil { // the backend closed under us
			rev = 0
		}
	}()
	tx := s.etcd.Server.Backend().ConcurrentReadTx()
	tx.RLock()
	defer tx.RUnlock()
	rev, _ = mvcc.UnsafeReadFinishedCompact(tx)
	return rev
}
