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

// fillToQuota writes values of 512 KiB under keyOf(i) until etcd refuses a
// write for lack of space; it fails the test if it never does.
func fillToQuota(t *testing.T, ctx context.Context, cli *clientv3.Client, keyOf func(i int) string) int {
	t.Helper()
	val := strings.Repeat("x", 512<<10)
	for i := range 400 { // 200 MiB: far past any test quota
		_, err := cli.Put(ctx, keyOf(i), val)
		if store.IsNoSpace(err) {
			return i
		}
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	t.Fatal("etcd never ran out of space")
	return 0
}

// waitFor polls cond every 50ms until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// etcd filled to a small quota raises NOSPACE; the maintenance loop
// recovers by itself when compaction and defrag free the space (old
// revisions of rewritten keys), and keeps the alarm, visibly, while the
// space is live data, until that is deleted.
func TestNoSpaceAlarmAndRecovery(t *testing.T) {
	t.Parallel()
	const quota = 24 << 20
	s := openStore(t, func(c *store.Config) {
		c.Space = store.SpaceConfig{QuotaBytes: quota, Interval: 100 * time.Millisecond}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.RunMaintenance(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	cli := s.Client()

	// 1. Old revisions of the same 4 keys fill the db: recovered alone.
	n := fillToQuota(t, ctx, cli, func(i int) string { return fmt.Sprintf("/filler/rewritten/%d", i%4) })
	t.Logf("NOSPACE after %d writes of 512 KiB", n)
	waitFor(t, 30*time.Second, "recovery from rewritten keys", func() bool {
		sp := s.Space()
		return sp.Recoveries >= 1 && !sp.NoSpace
	})
	if _, err := s.CreateTask(ctx, spec("02:00:00:00:0a:01")); err != nil {
		t.Fatalf("create a task after recovery: %v", err)
	}
	sp := s.Space()
	if sp.DBSize > quota*9/10 || sp.Defrags < 1 || sp.QuotaBytes != quota {
		t.Fatalf("after recovery: %+v", sp)
	}
	t.Logf("recovered: %+v", sp)

	// 2. Live data fills it: the alarm stays (nothing to free), writes
	// keep failing, deletes work, and then lpmos recovers.
	// (64 KiB values, filled again if lpmos still finds 10% of the quota
	// free after its defrag and disarms.)
	small := strings.Repeat("y", 64<<10)
	held := false
	for i, round := 0, 0; round < 20 && !held; round++ {
		rec := s.Space().Recoveries
		for ; i < 4000; i++ {
			_, err := cli.Put(ctx, fmt.Sprintf("/filler/live/%05d", i), small)
			if store.IsNoSpace(err) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		// lpmos compacts and defragments: either that frees enough and it
		// disarms (fill on), or it gives up until data is deleted.
		waitFor(t, 30*time.Second, "lpmos's NOSPACE round", func() bool {
			sp := s.Space()
			return sp.NeedsOperator || sp.Recoveries > rec
		})
		held = s.Space().NeedsOperator
	}
	if !held {
		t.Fatal("live data never kept etcd out of space")
	}
	recoveries := s.Space().Recoveries
	time.Sleep(500 * time.Millisecond) // 5 maintenance rounds: nothing more to free
	if sp := s.Space(); !sp.NoSpace || !sp.NeedsOperator || sp.Recoveries != recoveries || len(sp.Alarms) != 1 || sp.Alarms[0] != "NOSPACE" {
		t.Fatalf("live data over the quota: alarm must stay: %+v", sp)
	}
	if _, err := s.CreateTask(ctx, spec("02:00:00:00:0a:02")); !store.IsNoSpace(err) {
		t.Fatalf("create a task under NOSPACE: %v, want a no-space error", err)
	}
	if _, err := cli.Delete(ctx, "/filler/", clientv3.WithPrefix()); err != nil {
		t.Fatalf("delete under NOSPACE: %v", err)
	}
	waitFor(t, 30*time.Second, "recovery after the filler was deleted", func() bool {
		sp := s.Space()
		return sp.Recoveries > recoveries && !sp.NoSpace
	})
	if _, err := s.CreateTask(ctx, spec("02:00:00:00:0a:02")); err != nil {
		t.Fatalf("create a task after the second recovery: %v", err)
	}
}

// Without an alarm, a member defragments only when it pays: once
// compaction left at least the ratio and the bytes free, not before.
func TestDefragWhenItPays(t *testing.T) {
	// Serial: it waits for maintenance rounds, which parallel tests'
	// fsyncs slowed past its bound in CI.
	s := openStore(t, func(c *store.Config) {
		c.Space = store.SpaceConfig{Interval: 100 * time.Millisecond, DefragMinFreeRatio: 0.5, DefragMinFreeBytes: 4 << 20}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.RunMaintenance(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	cli := s.Client()
	val := strings.Repeat("z", 256<<10)
	var rev int64
	for i := range 60 { // 15 MiB of revisions of 4 keys
		r, err := cli.Put(ctx, fmt.Sprintf("/filler/%d", i%4), val)
		if err != nil {
			t.Fatal(err)
		}
		rev = r.Header.Revision
	}
	time.Sleep(500 * time.Millisecond) // 5 rounds: nothing free yet
	if sp := s.Space(); sp.Defrags != 0 || sp.DBSize < 10<<20 {
		t.Fatalf("before compaction: %+v", sp)
	}
	if _, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	// bbolt hands the pages the compaction freed to its free list only at a
	// later write transaction once no older read is open, so etcd's "in use"
	// falls only after further writes: an idle member could wait forever,
	// a real one keeps writing. The test keeps writing a small key.
	waitFor(t, 60*time.Second, "defrag after compaction", func() bool {
		if s.Space().Defrags == 1 {
			return true
		}
		_, _ = cli.Put(ctx, "/tick", time.Now().String())
		return false
	})
	if sp := s.Space(); sp.DBSize > 4<<20 {
		t.Fatalf("after defrag: %+v", sp)
	}
	time.Sleep(500 * time.Millisecond) // and not again: nothing free
	if sp := s.Space(); sp.Defrags != 1 {
		t.Fatalf("defragmented again: %+v", sp)
	}
}
