package store

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// compactAtStart compacts the history of a restarted one-member cluster
// to its current revision and defragments the member when that frees
// space, before lpmos reads anything (issue 14, rss150). etcd rebuilds
// its in-memory key index from every revision in its db at start and maps
// the whole db file: with 10,000 installed tasks the revisions written
// since the last compaction (the periodic compaction keeps
// CompactionRetention of history; a member stopped within it, or a fleet
// of ended tasks whose history keys replaced their event keys,
// store/history.go, leaves them all) were ~half of both. After a restart
// no watcher of this process needs that history (every consumer starts
// from a read), and clients of the API resync from a snapshot as they do
// after a compaction. A cluster of several members keeps the periodic
// compaction alone: another member's watchers may still be behind.
// maxStartDefragBytes bounds the db that compactAtStart defragments
// whatever its free pages: copying it blocks the start for a few seconds
// per 100 MB.
const maxStartDefragBytes = 512 << 20

func (s *Store) compactAtStart(ctx context.Context) {
	if s.etcd == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	ml, err := s.cli.MemberList(ctx)
	if err != nil || len(ml.Members) != 1 {
		return
	}
	before, _, err := s.measure(ctx)
	if err != nil {
		s.log.Warn("store: compaction at start skipped", "error", err)
		return
	}
	start := time.Now()
	rev := before.Header.Revision
	_, err = s.cli.Compact(ctx, rev, clientv3.WithCompactPhysical())
	compacted := err == nil
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		// compacted to this revision already: nothing written since
	case err != nil:
		s.log.Warn("store: compaction at start failed", "revision", rev, "error", err)
		return
	default:
		s.log.Info("store: compacted the history at start", "revision", rev, "took", time.Since(start).Round(time.Millisecond))
	}
	// The db's in-use size is measured when a batch begins: commit the
	// compaction's last deletes (twice: the pages they free are free once
	// no transaction older than them is open).
	s.etcd.Server.Backend().ForceCommit()
	s.etcd.Server.Backend().ForceCommit()
	st, _, err := s.measure(ctx)
	if err != nil {
		return
	}
	s.log.Info("store: db after the compaction at start", "db_size", st.DbSize, "db_size_in_use", st.DbSizeInUse,
		"db_size_in_use_before", before.DbSizeInUse)
	// Defragment when the compaction removed revisions and the db is small
	// enough to copy in seconds (nobody is served yet; the db file is
	// mapped and read whole): the deleted versions are spread over every
	// page, so the free pages barely grow (69.1 -> 67.6 MB in use with
	// 10,000 installed tasks) while a copy is a fraction of the file.
	// Else the thresholds of a NOSPACE recovery (maintenance.go).
	free := st.DbSize - st.DbSizeInUse
	if compacted && st.DbSize <= maxStartDefragBytes || free >= 1<<20 && float64(free) >= 0.1*float64(st.DbSize) {
		s.defrag(ctx, st, "start")
	}
}
