package store_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/internal/pki"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	"go.etcd.io/etcd/server/v3/embed"
)

func joinRequest(t *testing.T, tok, name string) store.JoinRequest {
	t.Helper()
	_, id, secret, err := store.ParseJoinToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	_, csrPEM, err := pki.NewKeyAndCSR(name)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	return store.JoinRequest{
		TokenID: id, Proof: store.JoinProof(secret, csr.Raw), CSR: string(csrPEM), Name: name,
		PeerURL:   fmt.Sprintf("https://127.0.0.1:%d", storetest.FreePort(t)),
		ClientURL: fmt.Sprintf("https://127.0.0.1:%d", storetest.FreePort(t)),
	}
}

func TestAdmitMember(t *testing.T) {
	ctx := context.Background()
	s := storetest.New(t)
	if _, err := s.CreateJoinToken(ctx, 0, false); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("ttl 0: %v", err)
	}
	tok, err := s.CreateJoinToken(ctx, 600e9, false)
	if err != nil {
		t.Fatal(err)
	}
	pin, id, _, err := store.ParseJoinToken(tok.Token)
	if err != nil || pin != s.CA().Fingerprint() || id != tok.ID {
		t.Fatalf("parse %q: %v", tok.Token, err)
	}

	// Refusals leave the cluster as it was.
	req := joinRequest(t, tok.Token, "m2")
	wrong := req
	wrong.Proof = strings.Repeat("0", 64)
	if _, err := s.AdmitMember(ctx, wrong); !errors.Is(err, store.ErrJoinDenied) {
		t.Fatalf("wrong proof: %v", err)
	}
	other := joinRequest(t, tok.Token, "m2")
	swapped := req
	swapped.CSR = other.CSR // a proof is bound to its CSR
	if _, err := s.AdmitMember(ctx, swapped); !errors.Is(err, store.ErrJoinDenied) {
		t.Fatalf("proof of another CSR: %v", err)
	}
	plain := req
	plain.PeerURL = "http://127.0.0.1:1"
	if _, err := s.AdmitMember(ctx, plain); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("http peer URL: %v", err)
	}
	taken := joinRequest(t, tok.Token, "lpmos") // storetest's member name
	if _, err := s.AdmitMember(ctx, taken); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("taken name: %v", err)
	}
	if st, err := s.ClusterStatus(ctx); err != nil || len(st.Members) != 1 || st.Voters != 1 || !st.Members[0].Leader || !st.Members[0].Self {
		t.Fatalf("status after refusals: %v %+v", err, st)
	}

	resp, err := s.AdmitMember(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Reused || resp.Warning == "" || !strings.Contains(resp.InitialCluster, "m2="+req.PeerURL) || len(resp.ClientURLs) != 1 {
		t.Fatalf("join response: %+v", resp)
	}
	cert, err := pki.ParseCertPEM([]byte(resp.Cert))
	if err != nil || cert.CheckSignatureFrom(s.CA().Cert) != nil || !strings.HasPrefix(cert.Subject.CommonName, "m2@") {
		t.Fatalf("issued cert: %v", err)
	}
	// The same joiner again (its start was interrupted) reuses the add.
	again := joinRequest(t, tok.Token, "m2")
	again.PeerURL, again.ClientURL = req.PeerURL, req.ClientURL
	resp2, err := s.AdmitMember(ctx, again)
	if err != nil || !resp2.Reused || resp2.MemberID != resp.MemberID {
		t.Fatalf("second join of the same peer URL: %v %+v", err, resp2)
	}
	st, err := s.ClusterStatus(ctx)
	if err != nil || len(st.Members) != 2 || st.Voters != 1 {
		t.Fatalf("status with a learner: %v %+v", err, st)
	}
	if _, err := s.RemoveMember(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("remove unknown: %v", err)
	}
	if _, err := s.RemoveMember(ctx, resp.MemberID); err != nil {
		t.Fatalf("remove the learner: %v", err)
	}
	if _, err := s.RemoveMember(ctx, "lpmos"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("remove the last member: %v", err)
	}
}

func TestSingleUseToken(t *testing.T) {
	ctx := context.Background()
	s := storetest.New(t)
	tok, err := s.CreateJoinToken(ctx, 600e9, true)
	if err != nil {
		t.Fatal(err)
	}
	req := joinRequest(t, tok.Token, "m2")
	if _, err := s.AdmitMember(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AdmitMember(ctx, joinRequest(t, tok.Token, "m3")); !errors.Is(err, store.ErrJoinDenied) || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("second use: %v", err)
	}
}

func TestParseJoinToken(t *testing.T) {
	for _, bad := range []string{"", "LPM10", "LPM10abc::x.y", "K10" + strings.Repeat("a", 64) + "::x.y", "LPM10" + strings.Repeat("a", 64) + "::xy", "LPM10" + strings.Repeat("g", 64) + "::x.y"} {
		if _, _, _, err := store.ParseJoinToken(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// A member from before mutual TLS (plain http URLs) restarts over https:
// its data is kept, a CA is made, and its peer URL in the membership is
// updated so members can join it.
func TestUpgradePlainHTTPMember(t *testing.T) {
	dir := t.TempDir()
	cport, pport := storetest.FreePort(t), storetest.FreePort(t)
	ec := embed.NewConfig()
	ec.Name = "old"
	ec.Dir = filepath.Join(dir, "etcd")
	cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", cport))
	pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", pport))
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	ec.InitialCluster = "old=" + pu.String()
	ec.LogLevel = "error"
	e, err := embed.StartEtcd(ec)
	if err != nil {
		t.Fatal(err)
	}
	<-e.Server.ReadyNotify()
	e.Close()

	ctx := context.Background()
	s, err := store.Open(ctx, store.Config{
		DataDir: dir, Name: "old", Logger: slog.New(slog.DiscardHandler),
		ClientURL: fmt.Sprintf("https://127.0.0.1:%d", cport), PeerURL: fmt.Sprintf("https://127.0.0.1:%d", pport),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.ClusterStatus(ctx)
	if err != nil || len(st.Members) != 1 || st.Members[0].PeerURLs[0] != fmt.Sprintf("https://127.0.0.1:%d", pport) || !st.Members[0].Healthy {
		t.Fatalf("after upgrade: %v %+v", err, st)
	}
	if s.CA() == nil || s.CA().Key == nil {
		t.Fatal("no CA after upgrade")
	}
}
