package store

import (
	"time"

	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/schema"
)

// A compaction deletes old revisions from etcd's db file, but bbolt frees
// a page only when a node falls under a quarter full, and the deleted
// revisions are spread over every page (each page holds consecutive
// revisions of many keys): after the first compaction of a db with 10,000
// installed tasks its pages are ~60% full and "in use" (db size minus the
// free pages) is still 99% of the file (BENCHMARKS.md, "Issue 14: RSS with
// 10,000 tasks (rss8)"). What a defrag would give back is the difference
// between the file and its live records packed, as a defrag copies them:
// the maintenance loop estimates it after each compaction from the
// records themselves.

// packedFill is the fill of a freshly defragmented db file: its live
// records (key, value and bbolt's 16-byte leaf element each) over its size
// (measured: 39.1 MB of records in a 46.0 MB file after etcd's defrag,
// which fills pages to 90%, plus branch pages and page headers).
const packedFill = 0.85

// frag is the maintenance loop's view of the db's fragmentation.
type frag struct {
	compactRev int64     // the compaction revision of the last estimate
	dbSize     int64     // the db size when it was made
	packed     int64     // the estimated size of the db after a defrag (0: none)
	lastDefrag time.Time // the last defrag of this member by lpmos
}

// packedDBSize estimates the size of the embedded member's db file after
// a defrag: the bytes of every record of etcd's key bucket (every
// revision kept: live keys and those a compaction has not removed yet) and
// of its lease bucket over packedFill. It reads the bucket in one read transaction of the
// backend, which etcd's own range reads share (~20-60 ms for 280,000
// revisions); false if the member is closing.
func (s *Store) packedDBSize() (size int64, ok bool) {
	if s.etcd == nil || s.closing.Load() {
		return 0, false
	}
	defer func() {
		if recover() != nil { // the backend closed under us
			size, ok = 0, false
		}
	}()
	tx := s.etcd.Server.Backend().ConcurrentReadTx()
	tx.RLock()
	defer tx.RUnlock()
	var recs int64
	// The key bucket holds nearly everything; the leases (one record per
	// lease) are counted too, so that many of them never look like space
	// a defrag would give back.
	for _, b := range []backend.Bucket{schema.Key, schema.Lease} {
		err := tx.UnsafeForEach(b, func(k, v []byte) error {
			recs += int64(16 + len(k) + len(v))
			return nil
		})
		if err != nil {
			return 0, false
		}
	}
	return int64(float64(recs) / packedFill), true
}

// reclaimable is what a defrag would give back now, as far as the loop
// knows: the free pages, or after a compaction the estimate from the
// records, whichever is larger. It makes a new estimate once per
// compaction (the first round too: a data dir compacted by a previous
// run and never defragmented).
func (s *Store) reclaimable(dbSize, inUse int64) int64 {
	free := dbSize - inUse
	if c := s.FinishedCompaction(); s.frag.packed == 0 || c != s.frag.compactRev {
		start := time.Now()
		if packed, ok := s.packedDBSize(); ok {
			s.frag.compactRev, s.frag.dbSize, s.frag.packed = c, dbSize, packed
			s.log.Debug("store: estimated the db size after a defrag", "db_size", dbSize, "packed", packed,
				"compact_revision", c, "took", time.Since(start).Round(time.Millisecond))
		}
	}
	if s.frag.packed == 0 {
		return free
	}
	// Writes since the estimate grew the file by what they wrote: the
	// estimate's gap stays.
	return max(free, s.frag.dbSize-s.frag.packed)
}
