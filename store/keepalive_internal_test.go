package store

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// regionLease is the lease of /regions/{id}, or 0 when the key is absent.
func regionLease(t *testing.T, s *Store, id string) clientv3.LeaseID {
	t.Helper()
	resp, err := s.cli.Get(context.Background(), regionKey(id))
	if err != nil {
		t.Fatalf("get region %s: %v", id, err)
	}
	if len(resp.Kvs) == 0 {
		return 0
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}

func waitRegion(t *testing.T, s *Store, id string, present bool) clientv3.LeaseID {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		l := regionLease(t, s, id)
		if (l != 0) == present {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("region %s present=%v: still not after 20 s", id, present)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestHaltKeepAlivesStopsRegionLease: halting (what a member removing
// itself does before the removal) stops the region's keepalive stream, so
// its lease runs out and nothing registers it again; resuming (the removal
// failed) registers the region again under a lease that is kept alive.
func TestHaltKeepAlivesStopsRegionLease(t *testing.T) {
	s := openCAKeyMember(t, t.TempDir())
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.RegisterRegion(ctx, Region{ID: "r1"}, 2); err != nil {
		t.Fatal(err)
	}
	first := waitRegion(t, s, "r1", true)

	if !s.haltKeepAlives() {
		t.Fatal("haltKeepAlives: no keepalive stream was open, want the region's")
	}
	waitRegion(t, s, "r1", false) // the 2 s lease was not renewed
	if _, err := s.keepAlive(ctx, first); err == nil {
		t.Fatal("keepAlive while halted: no error")
	}
	// The registration loop retries every second; halted, it must not
	// register the region again.
	time.Sleep(2500 * time.Millisecond)
	if l := regionLease(t, s, "r1"); l != 0 {
		t.Fatalf("region registered again (lease %x) while keepalives are halted", int64(l))
	}

	s.resumeKeepAlives()
	again := waitRegion(t, s, "r1", true)
	if again == first {
		t.Fatalf("region registered again under the expired lease %x", int64(first))
	}
	// Kept alive: past two TTLs the lease is still there.
	time.Sleep(4500 * time.Millisecond)
	ttl, err := s.cli.TimeToLive(context.Background(), again)
	if err != nil {
		t.Fatal(err)
	}
	if ttl.TTL <= 0 {
		t.Fatalf("lease %x after resume: TTL %d, want kept alive", int64(again), ttl.TTL)
	}
}
