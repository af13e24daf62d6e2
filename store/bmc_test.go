package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

func TestBMCSealedPerTask(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	ctx := context.Background()
	bmc := &store.BMCInput{Protocol: "IPMI", Address: "127.0.0.1:623", Username: "admin", Password: "pw-of-a"}
	a, err := st.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: "52:54:00:00:13:0a", OSType: "debian", OSVersion: "12"}, store.WithBMC(bmc))
	if err != nil {
		t.Fatal(err)
	}
	if a.BMC == nil || a.BMC.Protocol != "ipmi" || !a.BMC.PasswordSet {
		t.Fatalf("created task's BMC %+v, want ipmi (canonical) with password_set", a.BMC)
	}
	b, err := st.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: "52:54:00:00:13:0b", OSType: "debian", OSVersion: "12"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.TaskBMC(ctx, b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("TaskBMC of a task without one: %v, want ErrNotFound", err)
	}
	got, err := st.TaskBMC(ctx, a.ID)
	if err != nil || got.Password != "pw-of-a" || got.Address != "127.0.0.1:623" {
		t.Fatalf("TaskBMC: %+v, %v", got, err)
	}
	// A sealed record copied to another task does not open there: the
	// record's key is the associated data.
	raw, err := st.Client().Get(ctx, "/tasks/"+a.ID+"/bmc")
	if err != nil || len(raw.Kvs) != 1 {
		t.Fatalf("read record: %v", err)
	}
	if strings.Contains(string(raw.Kvs[0].Value), "pw-of-a") {
		t.Fatalf("record in the clear: %s", raw.Kvs[0].Value)
	}
	if _, err := st.Client().Put(ctx, "/tasks/"+b.ID+"/bmc", string(raw.Kvs[0].Value)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.TaskBMC(ctx, b.ID); err == nil || !strings.Contains(err.Error(), "open sealed BMC password") {
		t.Fatalf("a record moved to another task opened: %v", err)
	}
	// The task shows it redacted.
	tb, err := st.GetTask(ctx, b.ID)
	if err != nil || tb.BMC == nil || !tb.BMC.PasswordSet {
		t.Fatalf("GetTask BMC %+v, %v", tb.BMC, err)
	}
}

func TestBMCNeedsClusterKey(t *testing.T) {
	t.Parallel()
	cfg := storetest.Config(t, t.TempDir())
	member, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = member.Close() })
	ext, err := store.Open(context.Background(), storetest.ClientOf(cfg)) // --etcd-endpoints: no cluster key
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ext.Close() })
	_, err = ext.CreateTask(context.Background(), store.Spec{RegionID: "dc1", TargetMAC: "52:54:00:00:13:0c", OSType: "debian", OSVersion: "12"},
		store.WithBMC(&store.BMCInput{Protocol: "ipmi", Address: "10.0.0.1", Username: "a", Password: "b"}))
	if !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), "no cluster key") {
		t.Fatalf("BMC through a store without the cluster key: %v", err)
	}
	if _, err := member.TaskByMAC(context.Background(), "52:54:00:00:13:0c"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused task was written: %v", err)
	}
}
