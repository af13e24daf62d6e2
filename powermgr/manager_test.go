package powermgr_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/power/ipmisim"
	"github.com/lpmos/lpmos/powermgr"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// start runs a manager for region dc1 with test timings until the test ends.
func start(t *testing.T, st *store.Store, logs *lockedBuffer) {
	t.Helper()
	startSettle(t, st, logs, 10*time.Millisecond)
}

func startSettle(t *testing.T, st *store.Store, logs *lockedBuffer, settle time.Duration) {
	t.Helper()
	m, err := powermgr.New(powermgr.Config{
		Store: st, RegionID: "dc1", PollInterval: 300 * time.Millisecond, Concurrency: 2,
		Retries: 1, Backoff: 50 * time.Millisecond, Timeout: 3 * time.Second, RebootDelay: 10 * time.Millisecond, SettleDelay: settle,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func createTask(t *testing.T, st *store.Store, mac string, b *store.BMCInput) store.Task {
	t.Helper()
	var opts []store.CreateOption
	if b != nil {
		opts = append(opts, store.WithBMC(b))
	}
	task, err := st.CreateTask(context.Background(), store.Spec{RegionID: "dc1", TargetMAC: mac, OSType: "debian", OSVersion: "12"}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

func simInput(sim *ipmisim.BMC) *store.BMCInput {
	return &store.BMCInput{Protocol: "ipmi", Address: "127.0.0.1:" + strconv.Itoa(sim.Port), Username: sim.User, Password: sim.Pass}
}

// waitEvent waits for a power event of the task containing all of want.
func waitEvent(t *testing.T, st *store.Store, id string, want ...string) store.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs, err := st.Events(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Kind != store.EventKindPower {
				continue
			}
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(ev.Message, w)
			}
			if ok {
				return ev
			}
		}
		if time.Now().After(deadline) {
			var all []string
			for _, ev := range evs {
				all = append(all, ev.Kind+": "+ev.Message)
			}
			t.Fatalf("no power event with %q; events:\n%s", want, strings.Join(all, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitPower(t *testing.T, st *store.Store, id, state, errHas string) store.PowerState {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		task, err := st.GetTask(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if p := task.Power; p != nil && p.State == state && strings.Contains(p.Error, errHas) && (errHas != "" || p.Error == "") {
			return *p
		}
		if time.Now().After(deadline) {
			t.Fatalf("power state %+v, want %s with error %q", task.Power, state, errHas)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func transition(t *testing.T, st *store.Store, id string, to ...wire.Status) {
	t.Helper()
	for _, s := range to {
		if _, err := st.Transition(context.Background(), id, s, "test"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLifecycleAgainstIPMISim drives a task through its life with a real
// IPMI BMC (OpenIPMI's ipmi_sim) and checks with ipmitool what lpmos did.
func TestLifecycleAgainstIPMISim(t *testing.T) {
	st := storetest.New(t)
	sim := ipmisim.Start(t, true)
	logs := &lockedBuffer{}
	start(t, st, logs)
	ctx := context.Background()
	task := createTask(t, st, "52:54:00:00:13:20", simInput(sim))
	id := task.ID

	// Pending: nothing yet. Claimed (ready): PXE once, then on.
	if _, err := st.ClaimTask(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, st, id, "boot into PXE (attempt 1): next boot from pxe, powered on (it was off) (ipmi BMC 127.0.0.1:")
	if p, b := sim.Record("power"), sim.Record("boot"); p != "1" || b != "pxe" {
		t.Fatalf("chassis_control power %q boot %q, want 1 and pxe", p, b)
	}
	if out, err := sim.Ipmitool("chassis", "bootparam", "get", "5"); err != nil || !strings.Contains(out, "Force PXE") {
		t.Fatalf("ipmitool bootparam: %v\n%s", err, out)
	}
	waitPower(t, st, id, "on", "")

	// Completed: next boot from disk, power cycle.
	if err := os.WriteFile(filepath.Join(sim.Dir, "calls.log"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	transition(t, st, id, wire.StatusPendingApproval, wire.StatusApproved, wire.StatusInstalling, wire.StatusCompleted)
	waitEvent(t, st, id, "reboot into the installed OS: next boot from disk, power cycled")
	if b := sim.Record("boot"); b != "default" {
		t.Fatalf("chassis_control boot %q after completion, want default (disk)", b)
	}
	if out, err := sim.Ipmitool("chassis", "bootparam", "get", "5"); err != nil || !strings.Contains(out, "Force Boot from default Hard-Drive") {
		t.Fatalf("ipmitool bootparam after completion: %v\n%s", err, out)
	}
	if calls := sim.Record("calls.log"); !strings.Contains(calls, "set power 0") {
		t.Fatalf("no power cycle reached the BMC: %q", calls)
	}

	// An operator's request: off, through the queue, then state off.
	if _, err := st.RequestPower(ctx, id, "off", "alice"); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, st, id, "power off (requested by alice): powered off")
	if p := sim.Record("power"); p != "0" {
		t.Fatalf("chassis_control power %q after off, want 0", p)
	}
	if out, _ := sim.Ipmitool("power", "status"); !strings.Contains(out, "Chassis Power is off") {
		t.Fatalf("ipmitool: %s", out)
	}
	waitPower(t, st, id, "off", "")
	deadline := time.Now().Add(5 * time.Second)
	for {
		reqs, _, err := st.PowerRequests(ctx, "dc1")
		if err != nil {
			t.Fatal(err)
		}
		if len(reqs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("performed request still queued: %+v", reqs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The lifecycle steps ran once each.
	evs, _ := st.Events(ctx, id)
	boots, reboots := 0, 0
	for _, ev := range evs {
		boots += strings.Count(ev.Message, "boot into PXE")
		reboots += strings.Count(ev.Message, "reboot into the installed OS")
	}
	if boots != 1 || reboots != 1 {
		t.Fatalf("%d boot and %d reboot events, want one each", boots, reboots)
	}
	checkNoPassword(t, st, logs, sim.Pass)
}

// checkNoPassword greps every etcd key and value and the logs.
func checkNoPassword(t *testing.T, st *store.Store, logs *lockedBuffer, pw string) {
	t.Helper()
	all, err := st.Client().Get(context.Background(), "\x00", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range all.Kvs {
		if bytes.Contains(kv.Key, []byte(pw)) || bytes.Contains(kv.Value, []byte(pw)) {
			t.Fatalf("etcd key %s holds the BMC password in the clear", kv.Key)
		}
	}
	if strings.Contains(logs.String(), pw) {
		t.Fatal("the logs hold the BMC password")
	}
	if !strings.Contains(logs.String(), "power: ") {
		t.Fatalf("the log capture has no power lines: %s", logs.String())
	}
}

// TestBMCFailuresAreEventsAndRetryable: wrong credentials, a BMC refusing
// the boot override, an unreachable BMC. Each is an event naming the BMC
// and what it answered; the task is not lost and a retry works.
func TestBMCFailuresAreEventsAndRetryable(t *testing.T) {
	st := storetest.New(t)
	sim := ipmisim.Start(t, true)
	bare := ipmisim.Start(t, false) // no chassis control: refuses boot overrides (0xcc)
	logs := &lockedBuffer{}
	start(t, st, logs)
	ctx := context.Background()
	addr := "ipmi BMC 127.0.0.1:" + strconv.Itoa(sim.Port)

	t.Run("wrong password, then fixed and retried", func(t *testing.T) {
		in := simInput(sim)
		in.Password = "wrong-pw-Q9x"
		task := createTask(t, st, "52:54:00:00:13:21", in)
		if _, err := st.ClaimTask(ctx, task.ID, ""); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, st, task.ID, "set next boot to pxe failed (try 1 of 2), retrying in 50ms", addr)
		ev := waitEvent(t, st, task.ID, "boot into PXE (attempt 1) failed: set next boot to pxe failed after 2 tries", addr, "PUT /api/v1/tasks/"+task.ID+"/bmc")
		t.Logf("event: %s", ev.Message)
		if sim.Record("power") == "1" {
			t.Fatal("powered on with a wrong password")
		}
		got, err := st.GetTask(ctx, task.ID)
		if err != nil || got.Status.Status != wire.StatusReady {
			t.Fatalf("task after the failure: %v %v, want it still ready", got.Status, err)
		}
		waitPower(t, st, task.ID, "unknown", addr)
		// Fix the BMC, cancel and retry: attempt 2 boots.
		if _, err := st.SetTaskBMC(ctx, task.ID, simInput(sim), "test"); err != nil {
			t.Fatal(err)
		}
		transition(t, st, task.ID, wire.StatusCancelled, wire.StatusPending)
		if _, err := st.ClaimTask(ctx, task.ID, ""); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, st, task.ID, "boot into PXE (attempt 2): next boot from pxe, powered on")
		waitPower(t, st, task.ID, "on", "")
		checkNoPassword(t, st, logs, "wrong-pw-Q9x")
	})

	t.Run("boot override refused", func(t *testing.T) {
		task := createTask(t, st, "52:54:00:00:13:22", simInput(bare))
		if _, err := st.ClaimTask(ctx, task.ID, ""); err != nil {
			t.Fatal(err)
		}
		ev := waitEvent(t, st, task.ID, "failed after 2 tries", "ipmi BMC 127.0.0.1:"+strconv.Itoa(bare.Port), "boot device override refused")
		t.Logf("event: %s", ev.Message)
	})

	t.Run("unreachable BMC", func(t *testing.T) {
		in := simInput(sim)
		in.Address = "127.0.0.1:" + strconv.Itoa(ipmisim.FreeUDPPort(t))
		task := createTask(t, st, "52:54:00:00:13:23", in)
		p := waitPower(t, st, task.ID, "unknown", "ipmi BMC "+in.Address)
		t.Logf("power state: %+v", p)
		if _, err := st.RequestPower(ctx, task.ID, "cycle", "bob"); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, st, task.ID, "power cycle (requested by bob) failed: power cycle failed after 2 tries", "ipmi BMC "+in.Address)
	})

	t.Run("task without BMC is untouched", func(t *testing.T) {
		task, err := st.CreateTask(ctx, store.Spec{RegionID: "dc1", TargetMAC: "52:54:00:00:13:24", OSType: "debian", OSVersion: "12"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.ClaimTask(ctx, task.ID, ""); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond) // more than a poll interval
		got, err := st.GetTask(ctx, task.ID)
		if err != nil {
			t.Fatal(err)
		}
		evs, _ := st.Events(ctx, task.ID)
		for _, ev := range evs {
			if ev.Kind == store.EventKindPower {
				t.Fatalf("power event on a task without a BMC: %s", ev.Message)
			}
		}
		if got.Power != nil || got.BMC != nil {
			t.Fatalf("task without BMC got power %+v bmc %+v", got.Power, got.BMC)
		}
	})
}

// A completion the region learns of late (it was down) is not rebooted:
// the agent rebooted by itself meanwhile, into the installed OS. Nor is a
// completed machine rebooted because it gets a BMC later.
func TestLateCompletionIsNotRebooted(t *testing.T) {
	st := storetest.New(t)
	sim := ipmisim.Start(t, true)
	ctx := context.Background()
	task := createTask(t, st, "52:54:00:00:13:25", simInput(sim))
	transition(t, st, task.ID, wire.StatusReady, wire.StatusPendingApproval, wire.StatusApproved, wire.StatusInstalling, wire.StatusCompleted)
	got, err := st.GetTask(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	old := got.Status
	old.UpdatedAt = time.Now().Add(-time.Hour).UTC()
	raw, _ := json.Marshal(old)
	if _, err := st.Client().Put(ctx, "/tasks/"+task.ID+"/status", string(raw)); err != nil {
		t.Fatal(err)
	}
	later := createTask(t, st, "52:54:00:00:13:26", nil)
	transition(t, st, later.ID, wire.StatusReady, wire.StatusPendingApproval, wire.StatusApproved, wire.StatusInstalling, wire.StatusCompleted)

	logs := &lockedBuffer{}
	start(t, st, logs)
	// "1h0m0s" or, on a slow box, a few seconds more.
	waitEvent(t, st, task.ID, "completed 1h0m", "s ago: its agent rebooted the machine by itself; not power-cycling")
	if _, err := st.SetTaskBMC(ctx, later.ID, simInput(sim), "test"); err != nil {
		t.Fatal(err)
	}
	waitPower(t, st, later.ID, "off", "")
	time.Sleep(300 * time.Millisecond)
	if calls := sim.Record("calls.log"); strings.Contains(calls, "set") {
		t.Fatalf("the BMC was told to act: %q", calls)
	}
	evs, _ := st.Events(ctx, later.ID)
	for _, ev := range evs {
		if strings.Contains(ev.Message, "reboot") {
			t.Fatalf("a completed task that got a BMC was rebooted: %s", ev.Message)
		}
	}
}

// A machine that PXE-booted by itself (the region served its iPXE script
// for the attempt) or whose live agent took the task is not powered on or
// cycled by the region.
func TestBootingMachineIsLeftAlone(t *testing.T) {
	st := storetest.New(t)
	sim := ipmisim.Start(t, true)
	startSettle(t, st, &lockedBuffer{}, 500*time.Millisecond)
	ctx := context.Background()
	task := createTask(t, st, "52:54:00:00:13:27", simInput(sim))
	if _, err := st.ClaimTask(ctx, task.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := st.IssueBootToken(ctx, task.ID, time.Minute); err != nil { // the iPXE script of the machine's own PXE boot
		t.Fatal(err)
	}
	waitEvent(t, st, task.ID, "attempt 1: not powering the machine on: an iPXE script was served for attempt 1")
	waitPower(t, st, task.ID, "off", "")
	if calls := sim.Record("calls.log"); strings.Contains(calls, "set") {
		t.Fatalf("the BMC was told to act: %q", calls)
	}
}
