package store

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"google.golang.org/grpc"
)

// inprocAs is an in-process client of s's member acting as etcd user cn.
func inprocAs(t *testing.T, s *Store, cn string) *clientv3.Client {
	t.Helper()
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
	passthrough := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return h(ctx, req)
	}
	cli, _, _ := newInprocClient(s.etcd.Server, cert, passthrough)
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func wantDenied(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: allowed, want permission denied", what)
	}
	// A watch's cancel reason is the status text ("rpc error: ... desc =
	// etcdserver: permission denied"), which rpctypes does not map back.
	if e := rpctypes.Error(err); !errors.Is(e, rpctypes.ErrPermissionDenied) && !errors.Is(e, rpctypes.ErrUserEmpty) &&
		!strings.HasSuffix(err.Error(), rpctypes.ErrPermissionDenied.Error()) {
		t.Fatalf("%s: %v, want permission denied", what, err)
	}
}

// The in-process client is checked by etcd's auth like a TLS client: its
// user must exist and its role must permit the key, for reads, writes and
// watches; without an identity it is refused; and a member whose etcd user
// is deleted (a removed member) loses its own in-process access.
func TestInprocClientIsSubjectToAuth(t *testing.T) {
	t.Parallel()
	s := openCAKeyMember(t, t.TempDir())
	t.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The member's own client (its certificate's user, root role).
	if _, err := s.cli.Put(ctx, "/ok/a", "1"); err != nil {
		t.Fatalf("member's own put: %v", err)
	}
	if _, err := s.cli.Put(ctx, "/secret/a", "2"); err != nil {
		t.Fatalf("member's own put: %v", err)
	}

	// No identity at all (etcd's plain v3client).
	anon := v3client.New(s.etcd.Server)
	t.Cleanup(func() { _ = anon.Close() })
	_, err := anon.Get(ctx, "/ok/a")
	wantDenied(t, "get without identity", err)

	// A user etcd does not know.
	_, err = inprocAs(t, s, "stranger").Get(ctx, "/ok/a")
	wantDenied(t, "get as an unknown user", err)

	// A user that may only read /ok/.
	if _, err := s.cli.RoleAdd(ctx, "okreader"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli.RoleGrantPermission(ctx, "okreader", "/ok/", clientv3.GetPrefixRangeEnd("/ok/"), clientv3.PermissionType(clientv3.PermRead)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli.UserAddWithOptions(ctx, "reader", "", &clientv3.UserAddOptions{NoPassword: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli.UserGrantRole(ctx, "reader", "okreader"); err != nil {
		t.Fatal(err)
	}
	reader := inprocAs(t, s, "reader")
	resp, err := reader.Get(ctx, "/ok/a")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "1" {
		t.Fatalf("reader get /ok/a = %v, %v; want 1", resp, err)
	}
	_, err = reader.Get(ctx, "/secret/a")
	wantDenied(t, "reader get /secret/a", err)
	_, err = reader.Put(ctx, "/ok/a", "x")
	wantDenied(t, "reader put /ok/a", err)
	_, err = reader.Txn(ctx).Then(clientv3.OpPut("/secret/b", "x")).Commit()
	wantDenied(t, "reader txn put /secret/b", err)
	_, err = reader.UserList(ctx)
	wantDenied(t, "reader user list", err)

	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	for wr := range reader.Watch(wctx, "/secret/", clientv3.WithPrefix()) {
		if !wr.Canceled {
			t.Fatalf("reader watch /secret/: %+v, want it cancelled", wr)
		}
		wantDenied(t, "reader watch /secret/", wr.Err())
		break
	}

	// Deleting the member's own user (what removing a member does) takes
	// away its in-process access too.
	cn, err := certCN(s.tls.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli.UserDelete(ctx, cn); err != nil {
		t.Fatalf("delete the member's user %q: %v", cn, err)
	}
	_, err = s.cli.Get(ctx, "/ok/a")
	wantDenied(t, "member get after its user was deleted", err)
	if err != nil && !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("member get after its user was deleted: %v", err)
	}
}

// Once its etcd server has stopped (a removed member's stops by itself),
// the in-process client is refused, as a gRPC client is by the closed
// listeners, instead of reading etcd's closed backend: that read panicked
// in bbolt and took the process down.
func TestInprocRefusedAfterServerStop(t *testing.T) {
	t.Parallel()
	s := openCAKeyMember(t, t.TempDir())
	t.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.cli.Put(ctx, "/ok/a", "1"); err != nil {
		t.Fatalf("put before the stop: %v", err)
	}
	s.etcd.Server.Stop()
	<-s.etcd.Server.StopNotify()
	if _, err := s.cli.Get(ctx, "/ok/a"); !errors.Is(err, rpctypes.ErrStopped) {
		t.Fatalf("get after the stop: %v, want %v", err, rpctypes.ErrStopped)
	}
	if _, err := s.cli.Put(ctx, "/ok/b", "1"); !errors.Is(err, rpctypes.ErrStopped) {
		t.Fatalf("put after the stop: %v, want %v", err, rpctypes.ErrStopped)
	}
}
