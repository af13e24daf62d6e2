package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

func tokenState(t *testing.T, s *store.Store, id string) store.JoinTokenInfo {
	t.Helper()
	toks, err := s.ListJoinTokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		if tk.ID == id {
			return tk
		}
	}
	t.Fatalf("token %s not listed: %+v", id, toks)
	return store.JoinTokenInfo{}
}

// TestJoinTokenListRevoke: tokens are listed with their kind, expiry and
// use; a used single-use, a revoked and an expired token are each refused
// with a message naming the cause, and the refusal adds nobody.
func TestJoinTokenListRevoke(t *testing.T) {
	ctx := context.Background()
	s := storetest.New(t)
	single, err := s.CreateJoinToken(ctx, 10*time.Minute, true)
	if err != nil {
		t.Fatal(err)
	}
	reusable, err := s.CreateJoinToken(ctx, 10*time.Minute, false)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := s.CreateJoinToken(ctx, 10*time.Minute, false)
	if err != nil {
		t.Fatal(err)
	}
	if in := tokenState(t, s, single.ID); !in.SingleUse || in.Used || in.State != "valid" || !in.ExpiresAt.Equal(single.ExpiresAt) {
		t.Fatalf("new single-use token listed as %+v", in)
	}
	if in := tokenState(t, s, reusable.ID); in.SingleUse || in.State != "valid" {
		t.Fatalf("reusable token listed as %+v", in)
	}
	// Age the third token past its expiry (its lease keeps it a minute more).
	key := "/cluster/join-tokens/" + expired.ID
	resp, err := s.Client().Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %v", key, err)
	}
	var rec map[string]any
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		t.Fatal(err)
	}
	rec["expires_at"] = time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)
	b, _ := json.Marshal(rec)
	if _, err := s.Client().Put(ctx, key, string(b)); err != nil {
		t.Fatal(err)
	}

	req := joinRequest(t, single.Token, "m2")
	if _, err := s.AdmitMember(ctx, req); err != nil {
		t.Fatal(err)
	}
	if in := tokenState(t, s, single.ID); !in.Used || in.UsedBy != req.PeerURL || in.State != "used" {
		t.Fatalf("used single-use token listed as %+v", in)
	}
	if _, err := s.RevokeJoinToken(ctx, reusable.ID); err != nil {
		t.Fatal(err)
	}
	if in := tokenState(t, s, reusable.ID); in.State != "revoked" || in.RevokedAt.IsZero() {
		t.Fatalf("revoked token listed as %+v", in)
	}
	if in := tokenState(t, s, expired.ID); in.State != "expired" {
		t.Fatalf("expired token listed as %+v", in)
	}
	for _, tc := range []struct {
		name, tok, want string
	}{
		{"reused single-use", single.Token, "already used (by the member at " + req.PeerURL},
		{"revoked", reusable.Token, "was revoked"},
		{"expired", expired.Token, "expired at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := s.ClusterStatus(ctx)
			_, err := s.AdmitMember(ctx, joinRequest(t, tc.tok, "m3"))
			if !errors.Is(err, store.ErrJoinDenied) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("join: %v; want %q", err, tc.want)
			}
			if after, _ := s.ClusterStatus(ctx); len(after.Members) != len(before.Members) {
				t.Fatalf("refused join changed the members: %d -> %d", len(before.Members), len(after.Members))
			}
		})
	}
	if _, err := s.RevokeJoinToken(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}
	if _, err := s.RevokeJoinToken(ctx, "../x"); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("revoke bad id: %v", err)
	}
}

// TestAbortJoin: only the joiner (same token proof over the same CSR) can
// take its add back; then the member is gone and the single-use token can
// admit the retried join.
func TestAbortJoin(t *testing.T) {
	ctx := context.Background()
	s := storetest.New(t)
	tok, err := s.CreateJoinToken(ctx, 10*time.Minute, true)
	if err != nil {
		t.Fatal(err)
	}
	req := joinRequest(t, tok.Token, "m2")
	resp, err := s.AdmitMember(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	other := joinRequest(t, tok.Token, "m2") // same secret, another CSR
	for name, bad := range map[string]store.AbortJoinRequest{
		"another csr":  {JoinRequest: other, MemberID: resp.MemberID},
		"wrong proof":  {JoinRequest: store.JoinRequest{TokenID: req.TokenID, Proof: strings.Repeat("0", 64), CSR: req.CSR}, MemberID: resp.MemberID},
		"other member": {JoinRequest: req, MemberID: "1"},
	} {
		if _, err := s.AbortJoin(ctx, bad); !errors.Is(err, store.ErrJoinDenied) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if st, _ := s.ClusterStatus(ctx); len(st.Members) != 2 {
		t.Fatalf("refused aborts changed the members: %+v", st)
	}
	if _, err := s.AbortJoin(ctx, store.AbortJoinRequest{JoinRequest: req, MemberID: resp.MemberID}); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.ClusterStatus(ctx); len(st.Members) != 1 {
		t.Fatalf("after the abort: %+v", st)
	}
	if in := tokenState(t, s, tok.ID); in.Used {
		t.Fatalf("single-use token still used after the abort: %+v", in)
	}
	if _, err := s.AbortJoin(ctx, store.AbortJoinRequest{JoinRequest: req, MemberID: resp.MemberID}); !errors.Is(err, store.ErrJoinDenied) {
		t.Fatalf("second abort: %v", err)
	}
	time.Sleep(time.Second) // same peer URL within a second: etcd id collision
	if _, err := s.AdmitMember(ctx, joinRequest(t, tok.Token, "m2")); err != nil {
		t.Fatalf("join after the abort: %v", err)
	}
}
