package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A compaction that removes every other revision leaves every page of the
// db half full: bbolt frees none of them ("in use" stays the file), yet a
// defrag halves the file. The member defragments on the estimate from its
// records (store/dbpacked.go), once, and not again.
func TestDefragWhenCompactionLeftPagesHalfFull(t *testing.T) {
	s := openStore(t, func(c *store.Config) {
		c.Space = store.SpaceConfig{Interval: 100 * time.Millisecond, DefragMinFreeRatio: 0.25, DefragMinFreeBytes: 1 << 20}
	})
	ctx, cancel := context.WithCancel(context.Background())
	cli := s.Client()
	// Two revisions of each key, one after the other: each page holds
	// both revisions of its keys, and the compaction removes one of each
	// pair.
	val := strings.Repeat("v", 600)
	var rev int64
	for i := range 2000 {
		key := fmt.Sprintf("/frag/%05d", i)
		for range 2 {
			r, err := cli.Put(ctx, key, val)
			if err != nil {
				t.Fatal(err)
			}
			rev = r.Header.Revision
		}
	}
	done := make(chan struct{})
	go func() { defer close(done); s.RunMaintenance(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(500 * time.Millisecond) // 5 rounds: nothing to give back yet
	before := s.Space()
	if before.Defrags != 0 || before.DBSize < 2<<20 {
		t.Fatalf("before compaction: %+v", before)
	}
	if _, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "defrag after compaction", func() bool { return s.Space().Defrags == 1 })
	after := s.Space()
	if after.DBSize > before.DBSize*3/4 {
		t.Fatalf("the defrag gave back too little: %d -> %d bytes", before.DBSize, after.DBSize)
	}
	for i := range 2000 {
		key := fmt.Sprintf("/frag/%05d", i)
		r, err := cli.Get(ctx, key)
		if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != val {
			t.Fatalf("%s after the defrag: %v %v", key, r, err)
		}
	}
	time.Sleep(500 * time.Millisecond) // and not again: nothing to give back
	if sp := s.Space(); sp.Defrags != 1 {
		t.Fatalf("defragmented again: %+v", sp)
	}
}
