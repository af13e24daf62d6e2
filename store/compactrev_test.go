package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/lpmos/lpmos/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestFinishedCompactionFollowsCompactions: 0 before any compaction, then
// the revision of the last one once etcd has finished it.
func TestFinishedCompactionFollowsCompactions(t *testing.T) {
	st := storetest.New(t)
	ctx := context.Background()
	if rev := st.FinishedCompaction(); rev != 0 {
		t.Fatalf("finished compaction %d before any; want 0", rev)
	}
	var last int64
	for range 3 {
		resp, err := st.Client().Put(ctx, "/compact/k", "v")
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	if _, err := st.Client().Compact(ctx, last, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for st.FinishedCompaction() != last {
		if time.Now().After(deadline) {
			t.Fatalf("finished compaction %d, want %d", st.FinishedCompaction(), last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
