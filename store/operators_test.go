package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

func TestOperatorTokenCheck(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t)
	alice, err := s.CreateOperatorToken(ctx, "alice", "")
	if err != nil || alice.Kind != store.OperatorAdmin || !strings.HasPrefix(alice.Token, "lpo_alice.") {
		t.Fatalf("create alice: %+v %v", alice, err)
	}
	ro, err := s.CreateOperatorToken(ctx, "mon.1", store.OperatorReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct{ name, kind string }{{"", ""}, {"a b", ""}, {"operator", ""}, {"x", "root"}} {
		if _, err := s.CreateOperatorToken(ctx, bad.name, bad.kind); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("create %q/%q: %v", bad.name, bad.kind, err)
		}
	}
	if _, err := s.CreateOperatorToken(ctx, "alice", ""); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate: %v", err)
	}
	for _, tc := range []struct {
		tok, name, kind string
	}{
		{alice.Token, "alice", store.OperatorAdmin},
		{ro.Token, "mon.1", store.OperatorReadOnly},
		{alice.Token + "x", "", ""},
		{"lpo_alice." + strings.Repeat("A", 43), "", ""},
		{"lpo_nobody.secret", "", ""},
		{"lpo_.x", "", ""},
		{"alice", "", ""},
		{"", "", ""},
	} {
		op, ok, err := s.CheckOperatorToken(ctx, tc.tok)
		if err != nil || ok != (tc.name != "") || op.Name != tc.name || op.Kind != tc.kind {
			t.Errorf("check %q: %+v %v %v", tc.tok, op, ok, err)
		}
	}
	if err := s.RemoveOperatorToken(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.CheckOperatorToken(ctx, alice.Token); ok {
		t.Fatal("removed token still valid")
	}
	if err := s.RemoveOperatorToken(ctx, "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	if ops, err := s.ListOperatorTokens(ctx); err != nil || len(ops) != 1 || ops[0].Name != "mon.1" || ops[0].Token != "" {
		t.Fatalf("list: %+v %v", ops, err)
	}
}

// TestApproveNamesTheActor: the approval event says who approved.
func TestApproveNamesTheActor(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	putImage(t, s, "22.04", 300e9)
	for _, tc := range []struct{ mac, actor, want string }{
		{"02:00:00:00:0e:01", "alice", "approved by alice"},
		{"02:00:00:00:0e:02", "", "approved by operator"},
	} {
		task := readyTask(t, s, tc.mac, "22.04", nil)
		if _, err := s.SetHardware(ctx, task.ID, fourDisks(t)); err != nil {
			t.Fatal(err)
		}
		actx := ctx
		if tc.actor != "" {
			actx = store.WithActor(ctx, tc.actor)
		}
		if _, err := s.Approve(actx, task.ID, ""); err != nil {
			t.Fatal(err)
		}
		evs, err := s.Events(ctx, task.ID)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range evs {
			found = found || e.Message == tc.want
		}
		if !found {
			t.Errorf("%s: no event %q in %+v", tc.mac, tc.want, evs)
		}
	}
}
