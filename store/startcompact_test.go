package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A restarted one-member cluster compacts its history to the current
// revision and defragments before it serves: the old versions are gone
// (a read at an old revision is refused as compacted), the live keys read
// as before, and the db file is smaller than before the restart.
func TestCompactionAtStart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := store.Open(ctx, storetest.Config(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	val := strings.Repeat("v", 4000)
	var first int64
	for round := range 10 { // 10 versions of 200 keys: 9 of each are history
		for i := range 200 {
			resp, err := s.Client().Put(ctx, fmt.Sprintf("/filler/%03d", i), fmt.Sprintf("%d:%s", round, val))
			if err != nil {
				t.Fatal(err)
			}
			if first == 0 {
				first = resp.Header.Revision
			}
		}
	}
	before, err := s.Client().Status(ctx, s.Client().Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = store.Open(ctx, storetest.Config(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if _, err := s.Client().Get(ctx, "/filler/000", clientv3.WithRev(first)); err == nil || !strings.Contains(err.Error(), rpctypes.ErrCompacted.Error()) {
		t.Errorf("read at revision %d after the restart: %v, want compacted", first, err)
	}
	resp, err := s.Client().Get(ctx, "/filler/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 200 || !strings.HasPrefix(string(resp.Kvs[0].Value), "9:") {
		t.Fatalf("%d live keys after the restart, want 200 at their last version", len(resp.Kvs))
	}
	after, err := s.Client().Status(ctx, s.Client().Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	if sp := s.Space(); sp.Defrags != 1 || after.DbSize >= before.DbSize/2 {
		t.Errorf("db %d bytes before the restart, %d after (%d defrags): want a defrag to less than half", before.DbSize, after.DbSize, sp.Defrags)
	}
}
