package store

import (
	"errors"
	"fmt"

	"go.etcd.io/etcd/server/v3/storage/mvcc"
)

// The embedded member's bbolt file is mapped into lpmos (read-only,
// shared; bbolt writes through the file, not the mapping) and etcd maps it
// with MAP_POPULATE, then reads every page of it at start to rebuild its
// key index: with 10,000 installed tasks that left ~80 MiB of the db file
// resident in lpmos's RSS for as long as it ran, though an idle member
// touches a few pages of it (issue 14: RSS < 150 MiB; BENCHMARKS.md,
// "Issue 14: RSS with 10,000 tasks (rss)"). TrimDBMapping drops the
// mapping's resident pages (madvise MADV_DONTNEED): the data stays in the
// kernel's page cache, and the next read of a page maps it again (a minor
// fault).

// TrimmedDB is what TrimDBMapping did.
type TrimmedDB struct {
	// MappedBytes is the size of the db mapping that was trimmed (etcd
	// maps 10 GiB of address space; only the file's pages can be resident).
	MappedBytes int64
	// ResidentBefore and ResidentAfter are the mapping's resident bytes
	// (its "Rss" in /proc/self/smaps) around the trim.
	ResidentBefore, ResidentAfter int64
}

// errNoTrim: the trim was not done (not an embedded member, not Linux,
// the member is stopping); not a failure.
var errNoTrim = errors.New("store: no db mapping to trim")

// TrimDBMapping drops the resident pages of the embedded member's mapped
// db file from this process (Linux; elsewhere, and for an external etcd,
// it does nothing and returns a zero TrimmedDB). It holds a read
// transaction of etcd's backend throughout, which keeps bbolt from
// unmapping or remapping the file (a defrag, a db received from the
// leader) until it is done, and trims only the mapping that holds a value
// read in that transaction: never any other memory.
func (s *Store) TrimDBMapping() (TrimmedDB, error) {
	if s.etcd == nil || s.closing.Load() {
		return TrimmedDB{}, nil
	}
	select {
	case <-s.etcd.Server.StoppingNotify():
		return TrimmedDB{}, nil
	default:
	}
	t, err := trimDBMapping(s.etcd.Server.Backend())
	if errors.Is(err, errNoTrim) {
		return TrimmedDB{}, nil
	}
	if err != nil {
		return TrimmedDB{}, fmt.Errorf("store: trim the db mapping: %w", err)
	}
	return t, nil
}

// FinishedCompaction returns the revision of the embedded member's last
// finished compaction (0: none yet, or an external etcd). A compaction
// reads every old revision in the db file (the mapping's pages are
// resident again) and allocates; lpmos trims after it (app/memrelease.go).
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
