package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.uber.org/zap"
)

// walBytesAfterSnapshot is the size of the entries a restart of the member
// in dir replays into memory: those of its WAL after its newest disk
// snapshot (the member is closed).
func walBytesAfterSnapshot(t *testing.T, dir string) (bytes, entries int) {
	t.Helper()
	member := filepath.Join(dir, "etcd", "member")
	var idx, term uint64
	sn, err := snap.New(zap.NewNop(), filepath.Join(member, "snap")).Load()
	switch {
	case err == nil:
		idx, term = sn.Metadata.GetIndex(), sn.Metadata.GetTerm()
	case errors.Is(err, snap.ErrNoSnapshot): // the whole WAL
	default:
		t.Fatalf("load the newest snapshot: %v", err)
	}
	w, err := wal.OpenForRead(zap.NewNop(), filepath.Join(member, "wal"), &walpb.Snapshot{Index: &idx, Term: &term})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_, _, ents, err := w.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		bytes += len(e.Data)
	}
	return bytes, len(ents)
}

// After a fold that wrote more than 1 MiB, the leader moves its raft log
// past it: the newest disk snapshot is at or after the fold's last entry,
// so a restart replays none of the fold's transactions, and the applied
// index is past the catch-up entries kept in memory; the no-op entries
// change no key and no revision; after a restart every task reads the
// same events; a round with nothing folded proposes nothing.
func TestFoldMovesRaftLogPastItself(t *testing.T) {
	dir := t.TempDir()
	cfg := storetest.Config(t, dir)
	ctx := context.Background()
	s, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if s != nil {
			_ = s.Close()
		}
	}()
	// 400 ended tasks with 10 event keys of ~360 bytes each: ~1.4 MB
	// folded.
	const n, keys = 400, 10
	at := time.Now().Add(-time.Hour)
	msg := strings.Repeat("m", 300)
	var kvs [][2]string
	var ids []string
	for i := range n {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012x", i)
		ids = append(ids, id)
		p := "/tasks/" + id + "/"
		kvs = append(kvs,
			[2]string{p + "spec", fmt.Sprintf(`{"region_id":"dc1","target_mac":"%s","os_type":"ubuntu","os_version":"22.04","created_at":%q}`,
				fmt.Sprintf("02:00:00:01:%02x:%02x", i>>8, i&0xff), at.Format(time.RFC3339Nano))},
			[2]string{p + "status", fmt.Sprintf(`{"s":"completed","r":"installation completed","u":%d,"a":1}`, at.UnixMilli())})
		for k := range keys {
			kvs = append(kvs, [2]string{fmt.Sprintf("%sevents/%020d", p, at.Add(time.Duration(k)*time.Second).UnixNano()),
				fmt.Sprintf(`{"f":"approved","t":"installing","m":"%s %d"}`, msg, k)})
		}
	}
	if err := s.PutRaw(ctx, kvs); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.TaskSummaries(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string][]store.Event{}
	for _, id := range ids {
		want[id] = mustEvents(t, s, id)
	}

	st, err := s.FoldEndedEvents(ctx, time.Now(), n, nil)
	if err != nil || st.Tasks != n || st.Bytes < 1<<20 {
		t.Fatalf("fold: %+v, %v; want %d tasks, >= 1 MiB", st, err, n)
	}
	foldEnd := s.AppliedIndex()
	rev := func() int64 {
		resp, err := s.Client().Get(ctx, "/tasks/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	revBefore := rev()
	s.NoteFold(ctx, st)
	snapi, err := s.DiskSnapshotIndex()
	if err != nil {
		t.Fatal(err)
	}
	if snapi < foldEnd {
		t.Fatalf("newest disk snapshot at %d, before the fold's last entry %d", snapi, foldEnd)
	}
	// And past the catch-up entries etcd keeps in memory: the member
	// that folded drops them too.
	if applied := s.AppliedIndex(); applied <= foldEnd+store.SnapshotCatchUpEntries {
		t.Fatalf("applied index %d: the fold's last entry %d is still within the %d catch-up entries kept in memory",
			applied, foldEnd, store.SnapshotCatchUpEntries)
	}
	if got := rev(); got != revBefore {
		t.Fatalf("revision %d after the no-op entries, was %d", got, revBefore)
	}
	if resp, err := s.Client().Get(ctx, "/lpmos/raft-turnover"); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("the no-op entries' key: %v, %v", resp, err)
	}
	if got := s.FoldTurns(); got != 1 {
		t.Fatalf("FoldTurns %d after the turn, want 1", got)
	}
	// Nothing more folded: nothing proposed.
	applied := s.AppliedIndex()
	s.NoteFold(ctx, store.FoldStats{})
	if got := s.AppliedIndex(); got != applied {
		t.Fatalf("a round with nothing folded moved the applied index %d -> %d", applied, got)
	}
	if got := s.FoldTurns(); got != 1 {
		t.Fatalf("FoldTurns %d after a round with nothing folded, want still 1", got)
	}
	err = s.Close()
	s = nil
	if err != nil {
		t.Fatal(err)
	}

	if b, ents := walBytesAfterSnapshot(t, dir); b > st.Bytes/8 {
		t.Fatalf("a restart replays %d entries of %d bytes after the newest snapshot (the fold wrote %d)", ents, b, st.Bytes)
	}
	s, err = store.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if got := mustEvents(t, s, id); !slices.Equal(got, want[id]) {
			t.Fatalf("task %s after the restart: %d events %+v, want %d %+v", id, len(got), got, len(want[id]), want[id])
		}
		if c := eventKeyCount(t, s, id); c != 1 {
			t.Fatalf("task %s has %d event keys after the restart, want 1 (folded)", id, c)
		}
	}
}
