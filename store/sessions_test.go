package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

func authEvents(t *testing.T, s *store.Store, id string) []string {
	t.Helper()
	evs, err := s.Events(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		if e.Kind == "auth" {
			out = append(out, e.Message)
		}
	}
	return out
}

func TestBootTokenRedeemedOnce(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	a := walk(t, ctx, s, "02:00:00:00:09:01", wire.StatusReady)
	b := walk(t, ctx, s, "02:00:00:00:09:02", wire.StatusReady)

	bootA, err := s.IssueBootToken(ctx, a.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if kind, subj, ok := store.ParseAgentToken(bootA); !ok || kind != store.TokenBoot || subj != a.ID {
		t.Fatalf("ParseAgentToken(%q) = %q %q %v", bootA, kind, subj, ok)
	}
	// A token of another task, or made up, opens nothing.
	if _, _, err := s.RedeemBootToken(ctx, b.ID, bootA, "10.0.0.9:1"); !errors.Is(err, store.ErrAuth) {
		t.Fatalf("other task's boot token: %v", err)
	}
	sess1, _, err := s.RedeemBootToken(ctx, a.ID, bootA, "10.0.0.5:1000")
	if err != nil {
		t.Fatal(err)
	}
	se, task, err := s.CheckSession(ctx, a.ID, sess1)
	if err != nil || se.Run != 1 || se.Attempt != 1 || task.ID != a.ID || se.Remote != "10.0.0.5:1000" {
		t.Fatalf("CheckSession = %+v, %v", se, err)
	}
	if _, _, err := s.CheckSession(ctx, a.ID, bootA); !errors.Is(err, store.ErrAuth) {
		t.Fatalf("boot token works as a session: %v", err)
	}
	// A second exchange of the same boot token: refused, with an event
	// naming the address that tried.
	_, _, err = s.RedeemBootToken(ctx, a.ID, bootA, "10.0.0.66:4444")
	if !errors.Is(err, store.ErrAuth) || !strings.Contains(err.Error(), "already redeemed") {
		t.Fatalf("replay: %v", err)
	}
	evs := authEvents(t, s, a.ID)
	if len(evs) != 2 || !strings.Contains(evs[1], "10.0.0.66:4444") || !strings.Contains(evs[1], "10.0.0.5:1000") {
		t.Fatalf("auth events %q", evs)
	}
	// A new boot (new script) redeems a new token: the first session dies,
	// and the event says who redeemed the new one.
	boot2, _ := s.IssueBootToken(ctx, a.ID, time.Minute)
	boot3, _ := s.IssueBootToken(ctx, a.ID, time.Minute) // a newer script supersedes boot2
	if _, _, err := s.RedeemBootToken(ctx, a.ID, boot2, "10.0.0.5:1001"); !errors.Is(err, store.ErrAuth) || !strings.Contains(err.Error(), "superseded") {
		t.Fatalf("superseded boot token: %v", err)
	}
	sess2, _, err := s.RedeemBootToken(ctx, a.ID, boot3, "10.0.0.7:2000")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = s.CheckSession(ctx, a.ID, sess1)
	if !errors.Is(err, store.ErrAuth) || !strings.Contains(err.Error(), "revoked") || !strings.Contains(err.Error(), "10.0.0.7:2000") {
		t.Fatalf("old session after a new exchange: %v", err)
	}
	if se, _, err := s.CheckSession(ctx, a.ID, sess2); err != nil || se.Run != 2 {
		t.Fatalf("new session: %+v %v", se, err)
	}
	evs = authEvents(t, s, a.ID)
	if last := evs[len(evs)-1]; !strings.Contains(last, "redeemed by 10.0.0.7:2000") || !strings.Contains(last, "revoked") {
		t.Fatalf("last event %q", last)
	}

	// Expired.
	bootB, _ := s.IssueBootToken(ctx, b.ID, time.Millisecond)
	time.Sleep(5 * time.Millisecond)
	if _, _, err := s.RedeemBootToken(ctx, b.ID, bootB, "x"); !errors.Is(err, store.ErrAuth) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired: %v", err)
	}
	// An ended task gets no boot token, and its unredeemed one dies.
	bootB, _ = s.IssueBootToken(ctx, b.ID, time.Minute)
	if _, err := s.Transition(ctx, b.ID, wire.StatusCancelled, "test"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RedeemBootToken(ctx, b.ID, bootB, "x"); !errors.Is(err, store.ErrAuth) {
		t.Fatalf("boot token of a cancelled task: %v", err)
	}
	if _, err := s.IssueBootToken(ctx, b.ID, time.Minute); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("boot token for a cancelled task: %v", err)
	}
}

func TestIssueSessionAndDiscovery(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	a := walk(t, ctx, s, "02:00:00:00:09:11", wire.StatusReady)
	boot, _ := s.IssueBootToken(ctx, a.ID, time.Minute)
	old, _, err := s.RedeemBootToken(ctx, a.ID, boot, "r1")
	if err != nil {
		t.Fatal(err)
	}
	se, _, _ := s.CheckSession(ctx, a.ID, old)
	next, _, err := s.IssueSession(ctx, a.ID, se.Rev, "r2", "retry", "attempt 1 retried")
	if err != nil {
		t.Fatal(err)
	}
	// A second holder of the old session is not handed another one.
	if _, _, err := s.IssueSession(ctx, a.ID, se.Rev, "r3", "retry", "x"); !errors.Is(err, store.ErrAuth) {
		t.Fatalf("second hand-over: %v", err)
	}
	if _, _, err := s.CheckSession(ctx, a.ID, old); !errors.Is(err, store.ErrAuth) {
		t.Fatal("old session still valid")
	}
	if se, _, err := s.CheckSession(ctx, a.ID, next); err != nil || se.Via != "retry" || se.Run != 2 {
		t.Fatalf("handed session: %+v %v", se, err)
	}

	const mac = "02:00:00:00:09:12"
	d1, err := s.OpenDiscoverySession(ctx, "dc1", mac, "10.1.1.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if kind, subj, ok := store.ParseAgentToken(d1); !ok || kind != store.TokenDiscovery || subj != mac {
		t.Fatalf("discovery token parses as %q %q %v", kind, subj, ok)
	}
	if _, err := s.CheckDiscoverySession(ctx, mac, d1); err != nil {
		t.Fatal(err)
	}
	d2, _ := s.OpenDiscoverySession(ctx, "dc1", mac, "10.1.1.2:2")
	if _, err := s.CheckDiscoverySession(ctx, mac, d1); !errors.Is(err, store.ErrAuth) || !strings.Contains(err.Error(), "10.1.1.2:2") {
		t.Fatalf("replaced discovery session: %v", err)
	}
	if err := s.DeleteDiscoverySession(ctx, mac); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CheckDiscoverySession(ctx, mac, d2); !errors.Is(err, store.ErrAuth) {
		t.Fatalf("deleted discovery session: %v", err)
	}
	for _, bad := range []string{"", "x", "s_" + a.ID, "s_not-a-task_" + strings.Repeat("A", 43), "q_" + a.ID + "_" + strings.Repeat("A", 43), "d_zz_" + strings.Repeat("A", 43)} {
		if _, _, ok := store.ParseAgentToken(bad); ok {
			t.Errorf("ParseAgentToken(%q) accepted", bad)
		}
	}
}

func TestAgentProgressOrder(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	task := walk(t, ctx, s, "02:00:00:00:09:21", wire.StatusApproved)
	seq := int64(0)
	p := func(run int, stage string, pct int) wire.Progress {
		seq++
		return wire.Progress{Seq: seq, Run: run, Stage: stage, Percentage: pct}
	}
	tests := []struct {
		name string
		p    wire.Progress
		want error // nil, ErrInvalid or ErrOutOfOrder
		msg  string
		// resend: the stage a ProgressBehindError asks for again (a
		// report that goes forward from what is stored); "": none.
		resend string
	}{
		{"jump to completed first", p(1, "completed", 100), store.ErrOutOfOrder, "expected stage partitioning", "partitioning"},
		{"unknown stage", p(1, "formatting", 5), store.ErrInvalid, "stage", ""},
		{"percentage outside the stage", p(1, "partitioning", 50), store.ErrInvalid, "0-20", ""},
		{"start", p(1, "partitioning", 0), nil, "", ""},
		{"forward", p(1, "partitioning", 20), nil, "", ""},
		{"percentage back", p(1, "partitioning", 10), store.ErrOutOfOrder, "expected stage partitioning at 20%", ""},
		{"skip a stage", p(1, "installing", 60), store.ErrOutOfOrder, "expected stage downloading", "downloading"},
		{"next stage", p(1, "downloading", 20), nil, "", ""},
		{"stage back", p(1, "partitioning", 20), store.ErrOutOfOrder, "expected stage downloading or installing", ""},
		{"installing", p(1, "installing", 90), nil, "", ""},
		{"configuring", p(1, "configuring", 95), nil, "", ""},
		{"completed before configuring is done", p(1, "completed", 100), store.ErrOutOfOrder, "expected stage configuring", "configuring"},
		{"a new run (reboot) starts at partitioning", p(2, "downloading", 30), store.ErrOutOfOrder, "expected stage partitioning", "partitioning"},
		{"new run", p(2, "partitioning", 0), nil, "", ""},
		{"new run goes on", p(2, "downloading", 25), nil, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.ReportAgentProgress(ctx, task.ID, tc.p)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.want, tc.msg)
			}
			if tc.want == store.ErrOutOfOrder && !errors.Is(err, store.ErrConflict) {
				t.Error("out of order does not match ErrConflict (409)")
			}
			var be *store.ProgressBehindError
			if got := errors.As(err, &be); got != (tc.resend != "") || got && be.Expected != tc.resend {
				t.Errorf("ProgressBehindError %v (%+v), want resend from %q", got, be, tc.resend)
			}
		})
	}
	got, _ := s.GetTask(ctx, task.ID)
	if got.Progress == nil || got.Progress.Run != 2 || got.Progress.Stage != "downloading" || got.Progress.Percentage != 25 {
		t.Fatalf("stored progress %+v", got.Progress)
	}
}

func TestDeleteMachineEndsItsDiscoverySession(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	const mac = "02:00:00:00:09:31"
	if _, err := s.RecordMachine(ctx, "dc1", mac, &wire.Hardware{BootMode: "bios"}); err != nil {
		t.Fatal(err)
	}
	tok, err := s.OpenDiscoverySession(ctx, "dc1", mac, "r")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMachine(ctx, mac); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CheckDiscoverySession(ctx, mac, tok); !errors.Is(err, store.ErrAuth) {
		t.Errorf("discovery session after DeleteMachine: %v", err)
	}
	if err := s.DeleteMachine(ctx, mac); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
}
