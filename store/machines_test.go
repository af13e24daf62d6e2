package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestRecordMachineUnchangedAndCap(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	// rev is the newest mod revision of the machine keys: only a machine
	// write moves it (the store's own start-up writes, the member's
	// certificate, may land while the table runs: CI of 40dcc70).
	rev := func() int64 {
		resp, err := s.Client().Get(ctx, "/machines/", clientv3.WithPrefix(), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(1))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return 0
		}
		return resp.Kvs[0].ModRevision
	}
	hw := func(model string) *wire.Hardware {
		return &wire.Hardware{CPU: wire.CPU{Model: model}, Disks: []wire.Disk{{Name: "sda"}}, CollectedAt: time.Now()}
	}
	tests := []struct {
		name        string
		region, mac string
		hw          *wire.Hardware
		max         int
		wantWritten bool
		wantErr     error
	}{
		{"first report", "dc1", "52:54:00:aa:00:01", hw("Xeon"), 2, true, nil},
		{"same report, later collected_at", "dc1", "52:54:00:aa:00:01", hw("Xeon"), 2, false, nil},
		{"same report, no hardware", "dc1", "52:54:00:aa:00:01", nil, 2, false, nil},
		{"changed report", "dc1", "52:54:00:aa:00:01", hw("EPYC"), 2, true, nil},
		{"same report from another region", "dc2", "52:54:00:aa:00:01", hw("EPYC"), 2, true, nil},
		{"second machine", "dc1", "52:54:00:aa:00:02", hw("Xeon"), 2, true, nil},
		{"third machine over the cap", "dc1", "52:54:00:aa:00:03", hw("Xeon"), 2, false, store.ErrFull},
		{"a known machine still updates at the cap", "dc1", "52:54:00:aa:00:02", hw("Atom"), 2, true, nil},
		{"no cap", "dc1", "52:54:00:aa:00:03", hw("Xeon"), 0, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := rev()
			m, written, err := s.RecordMachineLimited(ctx, tc.region, tc.mac, tc.hw, tc.max)
			if !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if written != tc.wantWritten {
				t.Errorf("written = %v, want %v", written, tc.wantWritten)
			}
			if after := rev(); (after != before) != tc.wantWritten {
				t.Errorf("revision %d -> %d, written %v", before, after, tc.wantWritten)
			}
			if err == nil && (m.MAC != tc.mac || m.RegionID != tc.region) {
				t.Errorf("machine %+v", m)
			}
			if errors.Is(err, store.ErrFull) {
				if _, gerr := s.GetMachine(ctx, tc.mac); !errors.Is(gerr, store.ErrNotFound) {
					t.Errorf("refused machine was stored: %v", gerr)
				}
			}
		})
	}
	first, err := s.GetMachine(ctx, "52:54:00:aa:00:01")
	if err != nil || first.Hardware.CPU.Model != "EPYC" || !first.FirstSeen.Before(first.LastSeen) && !first.FirstSeen.Equal(first.LastSeen) {
		t.Errorf("machine 1: %+v %v", first, err)
	}
}
