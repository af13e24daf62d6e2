package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

// seedInstalled writes n completed installs as lpmos leaves them (spec,
// status, hardware with 2 disks and 2 NICs, final progress, target disk,
// session, MAC index and 13 events), straight to etcd.
func seedInstalled(tb testing.TB, s *store.Store, n int) {
	tb.Helper()
	ctx := context.Background()
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			var kvs [][2]string
			for i := w; i < n; i += 8 {
				id := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
				mac := benchMAC(1<<24 + i)
				at := base.Add(time.Duration(i) * time.Second)
				js := func(v any) string { b, _ := json.Marshal(v); return string(b) }
				p := "/tasks/" + id + "/"
				hw := wire.Hardware{
					CPU:    wire.CPU{Model: "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", Sockets: 2, Cores: 64, Threads: 128},
					Memory: wire.Memory{TotalBytes: 512 << 30, TotalGB: 512},
					Disks: []wire.Disk{{Name: "nvme0n1", SizeBytes: 3840755982336, Model: "SAMSUNG MZQL23T8HCLS-00A07", Serial: "S64HNE0R" + id[:8]},
						{Name: "sda", SizeBytes: 480103981056, Model: "INTEL SSDSC2KB480G8", Serial: "PHYF" + id[:8], Vendor: "ATA"}},
					NICs: []wire.NIC{{Name: "eno1", MAC: mac, Driver: "ixgbe", SpeedMbps: 10000, Link: true}, {Name: "eno2", MAC: mac, Driver: "ixgbe"}},
					DMI:  wire.DMI{Vendor: "Supermicro", Product: "SYS-1029U-TRT"}, BootMode: "uefi", Kernel: "6.1.0-18-amd64", CollectedAt: at,
				}
				kvs = append(kvs,
					[2]string{p + "spec", js(store.Spec{RegionID: "dc1", TargetMAC: mac, OSType: "ubuntu", OSVersion: "22.04", Hostname: fmt.Sprintf("node-%05d", i), CreatedAt: at})},
					[2]string{p + "status", js(store.StatusRecord{Status: wire.StatusCompleted, UpdatedAt: at.Add(time.Minute), Attempt: 1})},
					[2]string{p + "hardware", js(hw)},
					[2]string{p + "progress", js(wire.Progress{Seq: 99, Stage: wire.StageCompleted, Percentage: 100, Message: "done", Attempt: 1, Run: 1, UpdatedAt: at.Add(time.Minute)})},
					[2]string{p + "target-disk", js(store.TargetDisk{Disk: hw.Disks[1], ChosenBy: store.ChosenByDefault, Description: "/dev/sda"})},
					[2]string{p + "session", js(store.Session{SHA256: fmt.Sprintf("%064x", i), Attempt: 1, Run: 1, IssuedAt: at, Remote: "10.0.0.1:1234", Via: "boot token"})},
					[2]string{"/index/mac/" + mac, id},
				)
				for e := range 13 {
					kvs = append(kvs, [2]string{fmt.Sprintf("%sevents/%020d", p, at.Add(time.Duration(e)*time.Second).UnixNano()),
						js(map[string]string{"kind": "stage", "stage": "downloading", "message": "event of a completed install"})})
				}
				if len(kvs) >= 1024 {
					if err := s.PutRaw(ctx, kvs); err != nil {
						errs <- err
						return
					}
					kvs = kvs[:0]
				}
			}
			if err := s.PutRaw(ctx, kvs); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		tb.Fatal(err)
	}
}

// TestListSummaries: the list reads its own writes at once, holds a
// hardware summary (no disks, no NICs), filters, pages newest first, and
// follows deletes; the full task still has everything.
func TestListSummaries(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	seedInstalled(t, s, 30)
	all, _, next, err := s.ListSummaries(ctx, store.Filter{}, 0, nil)
	if err != nil || len(all) != 30 || next != nil {
		t.Fatalf("listed %d tasks, next %v: %v", len(all), next, err)
	}
	for i, task := range all {
		if i > 0 && !task.Spec.CreatedAt.Before(all[i-1].Spec.CreatedAt) {
			t.Fatalf("not newest first at %d", i)
		}
		if task.Hardware == nil || task.Hardware.CPU.Threads != 128 || task.Hardware.DMI.Vendor != "Supermicro" ||
			len(task.Hardware.Disks) != 0 || len(task.Hardware.NICs) != 0 {
			t.Fatalf("summary hardware %+v: want CPU and DMI, no disks or NICs", task.Hardware)
		}
		if task.Progress == nil || task.Progress.Percentage != 100 || task.TargetDisk == nil || task.Status.Status != wire.StatusCompleted {
			t.Fatalf("summary %+v lacks progress, target disk or status", task)
		}
	}
	raw, _, _, err := s.ListSummariesJSON(ctx, store.Filter{}, 0, nil)
	if err != nil || len(raw) != len(all) {
		t.Fatalf("JSON list: %d, %v", len(raw), err)
	}
	for i := range raw {
		var got store.Task
		if err := json.Unmarshal(raw[i], &got); err != nil || got.ID != all[i].ID || got.Status != all[i].Status || got.Hardware.CPU != all[i].Hardware.CPU {
			t.Fatalf("JSON %d: %s (%v), want task %s", i, raw[i], err, all[i].ID)
		}
	}
	full, err := s.GetTask(ctx, all[0].ID)
	if err != nil || full.Hardware == nil || len(full.Hardware.Disks) != 2 {
		t.Fatalf("full task %+v: %v", full.Hardware, err)
	}

	// Read your writes: a task created (by this process or any other) is
	// in the next list.
	for i := range 5 {
		created, err := s.CreateTask(ctx, spec(benchMAC(1<<30+i)))
		if err != nil {
			t.Fatal(err)
		}
		got, _, _, err := s.ListSummaries(ctx, store.Filter{Status: wire.StatusPending}, 0, nil)
		if err != nil || len(got) != 1 || got[0].ID != created.ID {
			t.Fatalf("after creating %s: listed %d pending (%v): %+v", created.ID, len(got), err, got)
		}
		if _, err := s.Transition(ctx, created.ID, wire.StatusCancelled, "test"); err != nil {
			t.Fatal(err)
		}
		got, _, _, err = s.ListSummaries(ctx, store.Filter{Status: wire.StatusCancelled}, 0, nil)
		if err != nil || len(got) != i+1 {
			t.Fatalf("after cancelling %s: listed %d cancelled (%v)", created.ID, len(got), err)
		}
		// A write elsewhere in etcd only: the list still answers (the
		// watch's progress notification moves the index on).
		if _, err := s.RecordMachine(ctx, "dc1", benchMAC(1<<31+i), nil); err != nil {
			t.Fatal(err)
		}
		if got, _, _, err := s.ListSummaries(ctx, store.Filter{}, 0, nil); err != nil || len(got) != 30+i+1 {
			t.Fatalf("after a machine write: listed %d (%v)", len(got), err)
		}
	}

	// Pages of 7: every task once, in order.
	seen := map[string]bool{}
	var cur *store.Cursor
	for pages := 0; ; pages++ {
		page, _, next, err := s.ListSummaries(ctx, store.Filter{Status: wire.StatusCompleted}, 7, cur)
		if err != nil || len(page) > 7 {
			t.Fatalf("page %d: %d tasks, %v", pages, len(page), err)
		}
		for _, task := range page {
			if seen[task.ID] {
				t.Fatalf("task %s twice", task.ID)
			}
			seen[task.ID] = true
		}
		if next == nil {
			break
		}
		cur = next
	}
	if len(seen) != 30 {
		t.Fatalf("pages walked %d completed tasks, want 30", len(seen))
	}

	if _, err := s.DeleteTask(ctx, all[0].ID); err != nil {
		t.Fatal(err)
	}
	got, _, _, err := s.ListSummaries(ctx, store.Filter{Status: wire.StatusCompleted}, 0, nil)
	if err != nil || len(got) != 29 {
		t.Fatalf("after a delete: %d completed (%v), want 29", len(got), err)
	}
}

// BenchmarkListInstalled10k lists 10,000 completed installs (18 keys each:
// hardware, 13 events, ...): the full read (ListTasks: one range, every
// key decoded) against the summaries (ListSummaries: the index, one small
// revision read), all of them and a first page of 50.
func BenchmarkListInstalled10k(b *testing.B) {
	s := storetest.New(b)
	ctx := context.Background()
	const n = 10000
	seedInstalled(b, s, n)
	// The index loads on the first list (not timed).
	if tasks, _, _, err := s.ListSummaries(ctx, store.Filter{}, 1, nil); err != nil || len(tasks) != 1 {
		b.Fatalf("first list: %d, %v", len(tasks), err)
	}
	b.Run("ListTasks", func(b *testing.B) {
		for b.Loop() {
			if tasks, _, err := s.ListTasks(ctx, store.Filter{}); err != nil || len(tasks) != n {
				b.Fatalf("listed %d: %v", len(tasks), err)
			}
		}
	})
	b.Run("ListSummaries", func(b *testing.B) {
		for b.Loop() {
			if tasks, _, _, err := s.ListSummaries(ctx, store.Filter{}, 0, nil); err != nil || len(tasks) != n {
				b.Fatalf("listed %d: %v", len(tasks), err)
			}
		}
	})
	b.Run("ListSummaries+JSON", func(b *testing.B) { // what GET /api/v1/tasks did with the summaries
		for b.Loop() {
			tasks, _, _, err := s.ListSummaries(ctx, store.Filter{}, 0, nil)
			if err != nil || len(tasks) != n {
				b.Fatalf("listed %d: %v", len(tasks), err)
			}
			if _, err := json.Marshal(tasks); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ListSummariesJSON", func(b *testing.B) { // what it does: each task's JSON kept by the index
		for b.Loop() {
			if tasks, _, _, err := s.ListSummariesJSON(ctx, store.Filter{}, 0, nil); err != nil || len(tasks) != n {
				b.Fatalf("listed %d: %v", len(tasks), err)
			}
		}
	})
	b.Run("ListSummariesJSON/changed", func(b *testing.B) { // every task changed since the last list (after a round of progress)
		for b.Loop() {
			b.StopTimer()
			s.ForgetSummaryJSON()
			b.StartTimer()
			if tasks, _, _, err := s.ListSummariesJSON(ctx, store.Filter{}, 0, nil); err != nil || len(tasks) != n {
				b.Fatalf("listed %d: %v", len(tasks), err)
			}
		}
	})
	b.Run("FirstPage50", func(b *testing.B) {
		for b.Loop() {
			if tasks, _, _, err := s.ListSummaries(ctx, store.Filter{}, 50, nil); err != nil || len(tasks) != 50 {
				b.Fatalf("listed %d: %v", len(tasks), err)
			}
		}
	})
}

// TestTaskSummariesMatchFullRead: the index, loaded in chunks (300
// installs are ~5,700 keys under /tasks/, more than one chunk), holds
// every task the full read returns, in the same order, with the same spec,
// status, progress and target disk and the hardware summary (hostname
// kept, no disks or NICs); a task created afterwards is in the next call
// (it waits for the index to reach etcd's revision), and a watch from the
// returned revision+1 sees that creation.
func TestTaskSummariesMatchFullRead(t *testing.T) {
	s := storetest.New(t)
	ctx := context.Background()
	seedInstalled(t, s, 300)
	full, fullRev, err := s.ListTasks(ctx, store.Filter{})
	if err != nil || len(full) != 300 {
		t.Fatalf("full read: %d tasks, %v", len(full), err)
	}
	sums, rev, err := s.TaskSummaries(ctx)
	if err != nil || len(sums) != 300 || rev < fullRev {
		t.Fatalf("summaries: %d tasks at %d (full read at %d): %v", len(sums), rev, fullRev, err)
	}
	for i := range full {
		f, g := full[i], sums[i]
		if g.ID != f.ID || g.Spec.CreatedAt != f.Spec.CreatedAt || g.Spec.Hostname != f.Spec.Hostname || g.Status != f.Status ||
			g.Progress == nil || g.Progress.Seq != f.Progress.Seq || g.Progress.Stage != f.Progress.Stage || g.TargetDisk == nil || g.TargetDisk.Name != f.TargetDisk.Name {
			t.Fatalf("summary %d = %+v, want %+v", i, g, f)
		}
		if g.Hardware == nil || g.Hardware.CPU != f.Hardware.CPU || g.Hardware.DMI != f.Hardware.DMI ||
			len(g.Hardware.Disks) != 0 || len(g.Hardware.NICs) != 0 || len(f.Hardware.Disks) != 2 {
			t.Fatalf("summary hardware %d = %+v, want the full read's %+v without disks or NICs", i, g.Hardware, f.Hardware)
		}
	}

	// The hardware's hostname is kept (the live view shows and searches it).
	created, err := s.CreateTask(ctx, spec(benchMAC(1<<33)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimTask(ctx, created.ID, "boot-token"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetHardware(ctx, created.ID, wire.Hardware{Hostname: "rack7-node", DMI: wire.DMI{Serial: "SN7"}}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	changes := s.Watch(wctx, rev+1)
	sums, _, err = s.TaskSummaries(ctx)
	if err != nil || len(sums) != 301 || sums[0].ID != created.ID {
		t.Fatalf("after a creation: %d summaries, first %+v: %v", len(sums), sums[0], err)
	}
	if hw := sums[0].Hardware; hw == nil || hw.Hostname != "rack7-node" || hw.DMI.Serial != "SN7" {
		t.Fatalf("new task's hardware summary %+v: want hostname rack7-node, serial SN7", hw)
	}
	for c := range changes {
		if c.Kind == store.KindTaskCreated && c.TaskID == created.ID {
			return
		}
	}
	t.Fatal("the watch from the summaries' revision+1 ended without the creation")
}

// TestEachSummaryJSON: the streamed list (what GET /api/v1/tasks writes)
// hands each task's JSON in the list's order, byte for byte what
// json.Marshal makes of its summary, whether the index kept it, made it
// now on several goroutines (300 tasks: three chunks), or a mix (some
// tasks changed since the last list); after a change the new JSON is
// handed, not the kept one; an error of fn ends the walk and is returned.
func TestEachSummaryJSON(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	seedInstalled(t, s, 300)
	check := func(what string) {
		t.Helper()
		want, wantRev, _, err := s.ListSummaries(ctx, store.Filter{}, 0, nil)
		if err != nil || len(want) != 300 {
			t.Fatalf("%s: summaries %d, %v", what, len(want), err)
		}
		var got [][]byte
		n, rev, next, err := s.EachSummaryJSON(ctx, store.Filter{}, 0, nil, func(js json.RawMessage) error {
			got = append(got, js)
			return nil
		})
		if err != nil || n != 300 || len(got) != 300 || next != nil || rev < wantRev {
			t.Fatalf("%s: %d tasks (%d handed) at %d (summaries at %d), next %v: %v", what, n, len(got), rev, wantRev, next, err)
		}
		for i := range want {
			w, _ := json.Marshal(want[i])
			if !bytes.Equal(got[i], w) {
				t.Fatalf("%s: task %d:\n%s\nwant\n%s", what, i, got[i], w)
			}
		}
	}
	check("none kept")
	check("all kept")
	s.ForgetSummaryJSON()
	check("all made again")
	// Every third task changes (a new hostname in its spec).
	raw, _, _, err := s.ListSummaries(ctx, store.Filter{}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	var kvs [][2]string
	for i := 0; i < len(raw); i += 3 {
		sp := raw[i].Spec
		sp.Hostname = fmt.Sprintf("renamed-%d", i)
		b, _ := json.Marshal(sp)
		kvs = append(kvs, [2]string{"/tasks/" + raw[i].ID + "/spec", string(b)})
	}
	if err := s.PutRaw(ctx, kvs); err != nil {
		t.Fatal(err)
	}
	check("a third changed")
	got, _, _, err := s.ListSummaries(ctx, store.Filter{}, 0, nil)
	if err != nil || got[0].Spec.Hostname != "renamed-0" {
		t.Fatalf("after the renames: %q, %v", got[0].Spec.Hostname, err)
	}

	stop := errors.New("client gone")
	handed := 0
	_, _, _, err = s.EachSummaryJSON(ctx, store.Filter{}, 0, nil, func(json.RawMessage) error {
		handed++
		if handed == 130 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || handed != 130 {
		t.Fatalf("fn's error: %v after %d tasks, want %v after 130", err, handed, stop)
	}
	s.ForgetSummaryJSON()
	handed = 0
	if _, _, _, err = s.EachSummaryJSON(ctx, store.Filter{}, 0, nil, func(json.RawMessage) error { handed++; return stop }); !errors.Is(err, stop) || handed != 1 {
		t.Fatalf("fn's error with nothing kept: %v after %d tasks", err, handed)
	}
	check("after ended walks")
}
