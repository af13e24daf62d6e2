package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lpmos/lpmos/store"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The embedded member compacts by itself, periodically, keeping
// CompactionRetention of history (the flag's default is minutes; a second
// here): an old revision becomes unreadable without any maintenance loop or
// operator action, while the current value stays.
func TestPeriodicCompaction(t *testing.T) {
	t.Parallel()
	s := openStore(t, func(c *store.Config) { c.Space.CompactionRetention = time.Second })
	ctx := context.Background()
	cli := s.Client()
	first, err := cli.Put(ctx, "/compaction-test/key", "v0")
	if err != nil {
		t.Fatal(err)
	}
	old := first.Header.Revision
	if _, err := cli.Get(ctx, "/compaction-test/key", clientv3.WithRev(old)); err != nil {
		t.Fatalf("read at revision %d right after the write: %v", old, err)
	}
	// Keep writing, as a running lpmos does: etcd's periodic compactor
	// compacts to the revision it saw a retention ago.
	deadline := time.Now().Add(60 * time.Second)
	for i := 1; ; i++ {
		if _, err := cli.Put(ctx, "/compaction-test/key", fmt.Sprintf("v%d", i)); err != nil {
			t.Fatal(err)
		}
		_, err := cli.Get(ctx, "/compaction-test/key", clientv3.WithRev(old))
		if errors.Is(err, rpctypes.ErrCompacted) || errors.Is(err, rpctypes.ErrGRPCCompacted) {
			t.Logf("revision %d compacted after %d writes", old, i)
			break
		}
		if err != nil {
			t.Fatalf("read at revision %d: %v", old, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("revision %d still readable 60 s after the write: no periodic compaction", old)
		}
		time.Sleep(200 * time.Millisecond)
	}
	resp, err := cli.Get(ctx, "/compaction-test/key")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) == "v0" {
		t.Fatalf("current value after compaction: %v %v", resp, err)
	}
}
