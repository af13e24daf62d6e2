//go:build linux

package store_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/lpmos/lpmos/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestTrimDBMappingDropsResidentPagesAndKeepsData: after a read of every
// key the db file's pages are resident in the mapping; the trim drops
// them, and every key still reads as written, before and after more
// writes.
func TestTrimDBMappingDropsResidentPagesAndKeepsData(t *testing.T) {
	st := storetest.New(t)
	ctx := context.Background()
	want := seedTrim(t, st, 3000)
	readAllTrim(t, st, want) // maps the pages in

	tr, err := st.TrimDBMapping()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("trimmed %+v", tr)
	if tr.MappedBytes < 1<<20 {
		t.Fatalf("mapping of %d bytes trimmed; want the db mapping (etcd maps 10 GiB)", tr.MappedBytes)
	}
	if tr.ResidentBefore < 1<<20 {
		t.Fatalf("resident before the trim: %d bytes; want the ~3 MB of values just read", tr.ResidentBefore)
	}
	if tr.ResidentAfter > tr.ResidentBefore/4 {
		t.Fatalf("resident after the trim: %d of %d bytes; want the pages dropped", tr.ResidentAfter, tr.ResidentBefore)
	}
	readAllTrim(t, st, want)
	if _, err := st.Client().Put(ctx, "/trim/after", "x"); err != nil {
		t.Fatal(err)
	}
	want["/trim/after"] = "x"
	readAllTrim(t, st, want)
}

// TestTrimDBMappingDuringDefrag: trims running beside defrags (each one
// unmaps the db file and maps the new one) and writes never trim memory
// that is not the db mapping's (the race detector and the data check
// would see it) and lose no key.
func TestTrimDBMappingDuringDefrag(t *testing.T) {
	st := storetest.New(t)
	ctx := context.Background()
	want := seedTrim(t, st, 1000)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	stop := make(chan struct{})
	trims := 0
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := st.TrimDBMapping(); err != nil {
				fail(err)
				return
			}
			trims++
		}
	})
	for i := range 5 {
		if _, err := st.Client().Put(ctx, fmt.Sprintf("/trim/d%d", i), strings.Repeat("d", 512)); err != nil {
			t.Fatal(err)
		}
		want[fmt.Sprintf("/trim/d%d", i)] = strings.Repeat("d", 512)
		if err := st.DefragMember(); err != nil {
			t.Fatal(err)
		}
		readAllTrim(t, st, want)
	}
	close(stop)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if trims == 0 {
		t.Fatal("no trim ran beside the defrags")
	}
	readAllTrim(t, st, want)
}

func seedTrim(t *testing.T, st interface {
	PutRaw(context.Context, [][2]string) error
}, n int) map[string]string {
	t.Helper()
	want := map[string]string{}
	kvs := make([][2]string, 0, n)
	for i := range n {
		k, v := fmt.Sprintf("/trim/%05d", i), strings.Repeat(fmt.Sprint(i%10), 1024)
		kvs = append(kvs, [2]string{k, v})
		want[k] = v
	}
	if err := st.PutRaw(context.Background(), kvs); err != nil {
		t.Fatal(err)
	}
	return want
}

func readAllTrim(t *testing.T, st interface {
	Client() *clientv3.Client
}, want map[string]string) {
	t.Helper()
	resp, err := st.Client().Get(context.Background(), "/trim/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != len(want) {
		t.Fatalf("read %d keys, want %d", len(resp.Kvs), len(want))
	}
	for _, kv := range resp.Kvs {
		if want[string(kv.Key)] != string(kv.Value) {
			t.Fatalf("%s reads %.20q..., want %.20q...", kv.Key, kv.Value, want[string(kv.Key)])
		}
	}
}
