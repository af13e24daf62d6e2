package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/rand/v2"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy/adapter"
	"go.etcd.io/raft/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// lpmos's own client of its embedded member calls the etcd server in
// process (etcd's v3client adapters: the gRPC service implementations
// called directly, no protobuf framing, no TLS, no loopback socket), as the
// member's own etcd user.
//
// etcd takes a call's user from its context (EtcdServer.AuthInfoFromCtx):
// a token in the incoming gRPC metadata, else the CN of the first verified
// chain of the TLS peer (AuthStore.AuthInfoFromTLS), which is how the
// loopback TLS client authenticated. The in-process client puts into every
// call's context what gRPC would have put there for that TLS connection:
// the peer with this member's certificate as its verified chain, and
// incoming metadata (without a token). etcd then checks that user exactly
// as for a TLS call: the user must exist (a removed member's users are
// deleted, so its in-process client is refused too) and its role must
// permit the operation, and the auth revision is the current one. Only
// code in this process reaches that path, and this process holds the
// member's private key anyway; other members and external clients still
// need mutual TLS (and the CRL) on the client URL.
//
// A password token (Authenticate) was the alternative: it needs a password
// kept on disk, a bcrypt hash per Authenticate, and etcd's simple tokens
// carry the auth revision they were issued at, so every member join (a new
// user) would fail in-flight calls with "auth revision is old" until the
// token is refreshed.
//
// What etcd's gRPC interceptors do for the TLS path is done here too:
// learners refuse what etcd refuses a learner, a call or watch that
// requires a leader is refused without one and a watch is cancelled after
// 3 election timeouts without one, the panic of a removed member's Status
// is recovered (store/removedpanic.go), and calls are retried as clientv3's
// retry interceptor does (repeatable calls on Unavailable; every call on
// "auth revision is old", which is never applied).

// Retries as clientv3's defaults (defaultUnaryMaxRetries,
// defaultBackoffWaitBetween, defaultBackoffJitterFraction).
const (
	inprocMaxRetries = 100
	inprocRetryWait  = 25 * time.Millisecond
	// etcd's maxNoLeaderCnt: election timeouts without a leader before a
	// watch that requires one is cancelled.
	inprocNoLeaderTimeouts = 3
)

// inproc is the identity and the checks of the in-process client.
type inproc struct {
	srv     *etcdserver.EtcdServer
	peer    *peer.Peer
	recover grpc.UnaryServerInterceptor
}

// newInprocClient is a client of srv that acts as the etcd user of cert
// (its CN), and the raw KV and lease clients under it (for pre-built
// transactions, and for a lessor of its own: store/keepalive.go).
func newInprocClient(srv *etcdserver.EtcdServer, cert *x509.Certificate, recoverRemoved grpc.UnaryServerInterceptor) (*clientv3.Client, pb.KVClient, pb.LeaseClient) {
	ic := &inproc{
		srv: srv,
		peer: &peer.Peer{
			Addr:     inprocAddr{},
			AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}},
		},
		recover: recoverRemoved,
	}
	c := clientv3.NewCtxClient(context.Background(), clientv3.WithZapLogger(srv.Logger()))
	kvc := &inprocKV{ic, adapter.KvServerToKvClient(v3rpc.NewQuotaKVServer(srv))}
	c.KV = clientv3.NewKVFromKVClient(kvc, c)
	lc := &inprocLease{ic, adapter.LeaseServerToLeaseClient(v3rpc.NewQuotaLeaseServer(srv))}
	c.Lease = clientv3.NewLeaseFromLeaseClient(lc, c, time.Second)
	wc := &inprocWatch{ic, adapter.WatchServerToWatchClient(&inprocWatchServer{ic, v3rpc.NewWatchServer(srv)})}
	c.Watcher = &blankWatcher{clientv3.NewWatchFromWatchClient(wc, c)}
	c.Maintenance = clientv3.NewMaintenanceFromMaintenanceClient(&inprocMaintenance{ic, adapter.MaintenanceServerToMaintenanceClient(v3rpc.NewMaintenanceServer(srv, nil))}, c)
	c.Cluster = clientv3.NewClusterFromClusterClient(&inprocCluster{ic, adapter.ClusterServerToClusterClient(v3rpc.NewClusterServer(srv))}, c)
	c.Auth = clientv3.NewAuthFromAuthClient(&inprocAuth{ic, adapter.AuthServerToAuthClient(v3rpc.NewAuthServer(srv))}, c)
	return c, kvc, lc
}

type inprocAddr struct{}

func (inprocAddr) Network() string { return "inproc" }
func (inprocAddr) String() string  { return "inproc" }

// ctx is ctx as etcd's handlers see a call of this member's TLS client:
// its peer, and the incoming metadata (only the require-leader flag of the
// outgoing metadata; never a token).
func (ic *inproc) ctx(ctx context.Context) context.Context {
	md := metadata.MD{}
	if out, ok := metadata.FromOutgoingContext(ctx); ok {
		if v := out[rpctypes.MetadataRequireLeaderKey]; len(v) > 0 {
			md[rpctypes.MetadataRequireLeaderKey] = v
		}
	}
	return metadata.NewIncomingContext(peer.NewContext(ctx, ic.peer), md)
}

func requiresLeader(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md[rpctypes.MetadataRequireLeaderKey]
	return len(v) > 0 && v[0] == rpctypes.MetadataHasLeader
}

func (ic *inproc) noLeader() bool { return ic.srv.Leader() == types.ID(raft.None) }

// learner reports whether this member is a learner (as etcd's interceptor
// asks it: a member no longer in its member list is not).
func (ic *inproc) learner() bool {
	return ic.srv.IsMemberExist(ic.srv.MemberID()) && ic.srv.IsLearner()
}

// stopped reports whether the etcd server has begun to stop. Its backend
// is closed at the end of the stop, and etcd's handlers do not check for
// that: a read of the closed backend panics in bbolt (a nil transaction).
// Over gRPC the listeners refuse calls once the server is down; in process
// nothing stood in between, and a removed member's own ClusterStatus poll,
// after its etcd had stopped, took the process down before the `lpmos
// leave` it was answering got its reply (TestInterruptedJoinRecovers).
// A call already running when the stop begins is not covered.
func (ic *inproc) stopped() bool {
	select {
	case <-ic.srv.StoppingNotify():
		return true
	default:
		return false
	}
}

// check is etcd's unary interceptor's refusal for req (learner, leader).
func (ic *inproc) check(ctx context.Context, req any) error {
	if ic.learner() {
		ok := false
		switch r := req.(type) {
		case *pb.StatusRequest:
			ok = true
		case *pb.RangeRequest:
			ok = r.Serializable
		}
		if !ok {
			return rpctypes.ErrGRPCNotSupportedForLearner
		}
	}
	if requiresLeader(ctx) && ic.noLeader() {
		return rpctypes.ErrGRPCNoLeader
	}
	return nil
}

// retryWait waits before retry attempt n (jittered), or returns ctx's error.
func retryWait(ctx context.Context, n int) error {
	if n == 0 {
		return nil
	}
	d := inprocRetryWait + time.Duration((rand.Float64()*2-1)*0.1*float64(inprocRetryWait))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// call runs one unary call f(req) in process as this member's user.
func call[Req, Resp any](ctx context.Context, ic *inproc, method string, repeatable bool, req Req, f func(context.Context, Req) (Resp, error)) (Resp, error) {
	var zero Resp
	ctx = ic.ctx(ctx)
	info := &grpc.UnaryServerInfo{FullMethod: method}
	var last error
	for n := range inprocMaxRetries {
		if err := retryWait(ctx, n); err != nil {
			return zero, err
		}
		if ic.stopped() {
			return zero, rpctypes.ErrGRPCStopped
		}
		resp, err := ic.recover(ctx, req, info, func(ctx context.Context, r any) (any, error) {
			if err := ic.check(ctx, r); err != nil {
				return nil, err
			}
			return f(ctx, r.(Req))
		})
		if err == nil {
			return resp.(Resp), nil
		}
		last = err
		if ctx.Err() != nil {
			return zero, err
		}
		if errors.Is(rpctypes.Error(err), rpctypes.ErrAuthOldRevision) {
			continue // checked against a newer auth revision: not applied
		}
		if !repeatable || status.Code(err) != codes.Unavailable {
			return zero, err
		}
	}
	return zero, last
}

// The service clients. Each method is the adapter's, called as this
// member's user; "repeatable" as clientv3's retry.go marks the call.

type inprocKV struct {
	ic *inproc
	c  pb.KVClient
}

func (k *inprocKV) Range(ctx context.Context, r *pb.RangeRequest, _ ...grpc.CallOption) (*pb.RangeResponse, error) {
	return call(ctx, k.ic, "/etcdserverpb.KV/Range", true, r, func(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) { return k.c.Range(ctx, r) })
}

func (k *inprocKV) RangeStream(ctx context.Context, r *pb.RangeRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[pb.RangeStreamResponse], error) {
	return k.c.RangeStream(k.ic.ctx(ctx), r, opts...) // unsupported by the adapter
}

func (k *inprocKV) Put(ctx context.Context, r *pb.PutRequest, _ ...grpc.CallOption) (*pb.PutResponse, error) {
	return call(ctx, k.ic, "/etcdserverpb.KV/Put", false, r, func(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) { return k.c.Put(ctx, r) })
}

func (k *inprocKV) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest, _ ...grpc.CallOption) (*pb.DeleteRangeResponse, error) {
	return call(ctx, k.ic, "/etcdserverpb.KV/DeleteRange", false, r, func(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
		return k.c.DeleteRange(ctx, r)
	})
}

func (k *inprocKV) Txn(ctx context.Context, r *pb.TxnRequest, _ ...grpc.CallOption) (*pb.TxnResponse, error) {
	return call(ctx, k.ic, "/etcdserverpb.KV/Txn", false, r, func(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) { return k.c.Txn(ctx, r) })
}

func (k *inprocKV) Compact(ctx context.Context, r *pb.CompactionRequest, _ ...grpc.CallOption) (*pb.CompactionResponse, error) {
	return call(ctx, k.ic, "/etcdserverpb.KV/Compact", false, r, func(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
		return k.c.Compact(ctx, r)
	})
}

type inprocLease struct {
	ic *inproc
	c  pb.LeaseClient
}

func (l *inprocLease) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest, _ ...grpc.CallOption) (*pb.LeaseGrantResponse, error) {
	return call(ctx, l.ic, "/etcdserverpb.Lease/LeaseGrant", true, r, func(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
		return l.c.LeaseGrant(ctx, r)
	})
}

func (l *inprocLease) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest, _ ...grpc.CallOption) (*pb.LeaseRevokeResponse, error) {
	return call(ctx, l.ic, "/etcdserverpb.Lease/LeaseRevoke", true, r, func(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
		return l.c.LeaseRevoke(ctx, r)
	})
}

func (l *inprocLease) LeaseKeepAlive(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse], error) {
	if l.ic.learner() {
		return nil, rpctypes.ErrGRPCNotSupportedForLearner
	}
	return l.c.LeaseKeepAlive(l.ic.ctx(ctx), opts...)
}

func (l *inprocLease) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest, _ ...grpc.CallOption) (*pb.LeaseTimeToLiveResponse, error) {
	return call(ctx, l.ic, "/etcdserverpb.Lease/LeaseTimeToLive", true, r, func(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
		return l.c.LeaseTimeToLive(ctx, r)
	})
}

func (l *inprocLease) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest, _ ...grpc.CallOption) (*pb.LeaseLeasesResponse, error) {
	return call(ctx, l.ic, "/etcdserverpb.Lease/LeaseLeases", true, r, func(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
		return l.c.LeaseLeases(ctx, r)
	})
}

type inprocWatch struct {
	ic *inproc
	c  pb.WatchClient
}

func (w *inprocWatch) Watch(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[pb.WatchRequest, pb.WatchResponse], error) {
	return w.c.Watch(w.ic.ctx(ctx), opts...)
}

// inprocWatchServer is etcd's stream interceptor for watches: no watch on
// a learner, and a watch that requires a leader is refused without one and
// cancelled after inprocNoLeaderTimeouts election timeouts without one.
type inprocWatchServer struct {
	ic *inproc
	pb.WatchServer
}

func (w *inprocWatchServer) Watch(ss pb.Watch_WatchServer) error {
	if w.ic.learner() {
		return rpctypes.ErrGRPCNotSupportedForLearner
	}
	if !requiresLeader(ss.Context()) {
		return w.WatchServer.Watch(ss)
	}
	if w.ic.noLeader() {
		return rpctypes.ErrGRPCNoLeader
	}
	ctx, cancel := context.WithCancelCause(ss.Context())
	defer cancel(nil)
	go w.ic.monitorLeader(ctx, cancel)
	err := w.WatchServer.Watch(watchStreamCtx{ss, ctx})
	if errors.Is(context.Cause(ctx), rpctypes.ErrGRPCNoLeader) {
		return rpctypes.ErrGRPCNoLeader
	}
	return err
}

// monitorLeader cancels ctx when this member has had no leader for
// inprocNoLeaderTimeouts election timeouts in a row.
func (ic *inproc) monitorLeader(ctx context.Context, cancel context.CancelCauseFunc) {
	election := time.Duration(ic.srv.Cfg.TickMs) * time.Duration(ic.srv.Cfg.ElectionTicks) * time.Millisecond
	t := time.NewTicker(election)
	defer t.Stop()
	missed := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-ic.srv.StoppingNotify():
			return
		case <-t.C:
		}
		if ic.noLeader() {
			missed++
		} else {
			missed = 0
		}
		if missed >= inprocNoLeaderTimeouts {
			cancel(rpctypes.ErrGRPCNoLeader)
			return
		}
	}
}

type watchStreamCtx struct {
	pb.Watch_WatchServer
	ctx context.Context
}

func (s watchStreamCtx) Context() context.Context { return s.ctx }

// blankWatcher gives etcd's watch a context whose String does not read
// its values (as v3client's watchWrapper: those race with x/net/trace).
type blankWatcher struct{ clientv3.Watcher }

type blankContext struct{ context.Context }

func (*blankContext) String() string { return "(blankCtx)" }

func (w *blankWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	return w.Watcher.Watch(&blankContext{ctx}, key, opts...)
}

type inprocMaintenance struct {
	ic *inproc
	c  pb.MaintenanceClient
}

func (m *inprocMaintenance) Alarm(ctx context.Context, r *pb.AlarmRequest, _ ...grpc.CallOption) (*pb.AlarmResponse, error) {
	return call(ctx, m.ic, "/etcdserverpb.Maintenance/Alarm", true, r, func(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) { return m.c.Alarm(ctx, r) })
}

func (m *inprocMaintenance) Status(ctx context.Context, r *pb.StatusRequest, _ ...grpc.CallOption) (*pb.StatusResponse, error) {
	return call(ctx, m.ic, "/etcdserverpb.Maintenance/Status", true, r, func(ctx context.Context, r *pb.StatusRequest) (*pb.StatusResponse, error) { return m.c.Status(ctx, r) })
}

func (m *inprocMaintenance) Defragment(ctx context.Context, r *pb.DefragmentRequest, _ ...grpc.CallOption) (*pb.DefragmentResponse, error) {
	return call(ctx, m.ic, "/etcdserverpb.Maintenance/Defragment", false, r, func(ctx context.Context, r *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
		return m.c.Defragment(ctx, r)
	})
}

func (m *inprocMaintenance) Hash(ctx context.Context, r *pb.HashRequest, _ ...grpc.CallOption) (*pb.HashResponse, error) {
	return call(ctx, m.ic, "/etcdserverpb.Maintenance/Hash", true, r, func(ctx context.Context, r *pb.HashRequest) (*pb.HashResponse, error) { return m.c.Hash(ctx, r) })
}

func (m *inprocMaintenance) HashKV(ctx context.Context, r *pb.HashKVRequest, _ ...grpc.CallOption) (*pb.HashKVResponse, error) {
	return call(ctx, m.ic, "/etcdserverpb.Maintenance/HashKV", true, r, func(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) { return m.c.HashKV(ctx, r) })
}

func (m *inprocMaintenance) Snapshot(ctx context.Context, r *pb.SnapshotRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[pb.SnapshotResponse], error) {
	return m.c.Snapshot(m.ic.ctx(ctx), r, opts...)
}

func (m *inprocMaintenance) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest, _ ...grpc.CallOption) (*pb.MoveLeaderResponse, error) {
	return call(ctx, m.ic, "/etcdserverpb.Maintenance/MoveLeader", true, r, func(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
		return m.c.MoveLeader(ctx, r)
	})
}

func (m *inprocMaintenance) Downgrade(ctx context.Context, r *pb.DowngradeRequest, _ ...grpc.CallOption) (*pb.DowngradeResponse, error) {
	return call(ctx, m.ic, "/etcdserverpb.Maintenance/Downgrade", false, r, func(ctx context.Context, r *pb.DowngradeRequest) (*pb.DowngradeResponse, error) {
		return m.c.Downgrade(ctx, r)
	})
}

type inprocCluster struct {
	ic *inproc
	c  pb.ClusterClient
}

func (c *inprocCluster) MemberAdd(ctx context.Context, r *pb.MemberAddRequest, _ ...grpc.CallOption) (*pb.MemberAddResponse, error) {
	return call(ctx, c.ic, "/etcdserverpb.Cluster/MemberAdd", false, r, func(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
		return c.c.MemberAdd(ctx, r)
	})
}

func (c *inprocCluster) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest, _ ...grpc.CallOption) (*pb.MemberRemoveResponse, error) {
	return call(ctx, c.ic, "/etcdserverpb.Cluster/MemberRemove", false, r, func(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
		return c.c.MemberRemove(ctx, r)
	})
}

func (c *inprocCluster) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest, _ ...grpc.CallOption) (*pb.MemberUpdateResponse, error) {
	return call(ctx, c.ic, "/etcdserverpb.Cluster/MemberUpdate", false, r, func(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
		return c.c.MemberUpdate(ctx, r)
	})
}

func (c *inprocCluster) MemberList(ctx context.Context, r *pb.MemberListRequest, _ ...grpc.CallOption) (*pb.MemberListResponse, error) {
	return call(ctx, c.ic, "/etcdserverpb.Cluster/MemberList", true, r, func(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
		return c.c.MemberList(ctx, r)
	})
}

func (c *inprocCluster) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest, _ ...grpc.CallOption) (*pb.MemberPromoteResponse, error) {
	return call(ctx, c.ic, "/etcdserverpb.Cluster/MemberPromote", false, r, func(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
		return c.c.MemberPromote(ctx, r)
	})
}

type inprocAuth struct {
	ic *inproc
	c  pb.AuthClient
}

func authCall[Req, Resp any](ctx context.Context, a *inprocAuth, method string, repeatable bool, r Req, f func(pb.AuthClient, context.Context, Req, ...grpc.CallOption) (Resp, error)) (Resp, error) {
	return call(ctx, a.ic, "/etcdserverpb.Auth/"+method, repeatable, r, func(ctx context.Context, r Req) (Resp, error) { return f(a.c, ctx, r) })
}

func (a *inprocAuth) AuthEnable(ctx context.Context, r *pb.AuthEnableRequest, _ ...grpc.CallOption) (*pb.AuthEnableResponse, error) {
	return authCall(ctx, a, "AuthEnable", false, r, pb.AuthClient.AuthEnable)
}

func (a *inprocAuth) AuthDisable(ctx context.Context, r *pb.AuthDisableRequest, _ ...grpc.CallOption) (*pb.AuthDisableResponse, error) {
	return authCall(ctx, a, "AuthDisable", false, r, pb.AuthClient.AuthDisable)
}

func (a *inprocAuth) AuthStatus(ctx context.Context, r *pb.AuthStatusRequest, _ ...grpc.CallOption) (*pb.AuthStatusResponse, error) {
	return authCall(ctx, a, "AuthStatus", true, r, pb.AuthClient.AuthStatus)
}

func (a *inprocAuth) Authenticate(ctx context.Context, r *pb.AuthenticateRequest, _ ...grpc.CallOption) (*pb.AuthenticateResponse, error) {
	return authCall(ctx, a, "Authenticate", false, r, pb.AuthClient.Authenticate)
}

func (a *inprocAuth) UserAdd(ctx context.Context, r *pb.AuthUserAddRequest, _ ...grpc.CallOption) (*pb.AuthUserAddResponse, error) {
	return authCall(ctx, a, "UserAdd", false, r, pb.AuthClient.UserAdd)
}

func (a *inprocAuth) UserGet(ctx context.Context, r *pb.AuthUserGetRequest, _ ...grpc.CallOption) (*pb.AuthUserGetResponse, error) {
	return authCall(ctx, a, "UserGet", true, r, pb.AuthClient.UserGet)
}

func (a *inprocAuth) UserList(ctx context.Context, r *pb.AuthUserListRequest, _ ...grpc.CallOption) (*pb.AuthUserListResponse, error) {
	return authCall(ctx, a, "UserList", true, r, pb.AuthClient.UserList)
}

func (a *inprocAuth) UserDelete(ctx context.Context, r *pb.AuthUserDeleteRequest, _ ...grpc.CallOption) (*pb.AuthUserDeleteResponse, error) {
	return authCall(ctx, a, "UserDelete", false, r, pb.AuthClient.UserDelete)
}

func (a *inprocAuth) UserChangePassword(ctx context.Context, r *pb.AuthUserChangePasswordRequest, _ ...grpc.CallOption) (*pb.AuthUserChangePasswordResponse, error) {
	return authCall(ctx, a, "UserChangePassword", false, r, pb.AuthClient.UserChangePassword)
}

func (a *inprocAuth) UserGrantRole(ctx context.Context, r *pb.AuthUserGrantRoleRequest, _ ...grpc.CallOption) (*pb.AuthUserGrantRoleResponse, error) {
	return authCall(ctx, a, "UserGrantRole", false, r, pb.AuthClient.UserGrantRole)
}

func (a *inprocAuth) UserRevokeRole(ctx context.Context, r *pb.AuthUserRevokeRoleRequest, _ ...grpc.CallOption) (*pb.AuthUserRevokeRoleResponse, error) {
	return authCall(ctx, a, "UserRevokeRole", false, r, pb.AuthClient.UserRevokeRole)
}

func (a *inprocAuth) RoleAdd(ctx context.Context, r *pb.AuthRoleAddRequest, _ ...grpc.CallOption) (*pb.AuthRoleAddResponse, error) {
	return authCall(ctx, a, "RoleAdd", false, r, pb.AuthClient.RoleAdd)
}

func (a *inprocAuth) RoleGet(ctx context.Context, r *pb.AuthRoleGetRequest, _ ...grpc.CallOption) (*pb.AuthRoleGetResponse, error) {
	return authCall(ctx, a, "RoleGet", true, r, pb.AuthClient.RoleGet)
}

func (a *inprocAuth) RoleList(ctx context.Context, r *pb.AuthRoleListRequest, _ ...grpc.CallOption) (*pb.AuthRoleListResponse, error) {
	return authCall(ctx, a, "RoleList", true, r, pb.AuthClient.RoleList)
}

func (a *inprocAuth) RoleDelete(ctx context.Context, r *pb.AuthRoleDeleteRequest, _ ...grpc.CallOption) (*pb.AuthRoleDeleteResponse, error) {
	return authCall(ctx, a, "RoleDelete", false, r, pb.AuthClient.RoleDelete)
}

func (a *inprocAuth) RoleGrantPermission(ctx context.Context, r *pb.AuthRoleGrantPermissionRequest, _ ...grpc.CallOption) (*pb.AuthRoleGrantPermissionResponse, error) {
	return authCall(ctx, a, "RoleGrantPermission", false, r, pb.AuthClient.RoleGrantPermission)
}

func (a *inprocAuth) RoleRevokePermission(ctx context.Context, r *pb.AuthRoleRevokePermissionRequest, _ ...grpc.CallOption) (*pb.AuthRoleRevokePermissionResponse, error) {
	return authCall(ctx, a, "RoleRevokePermission", false, r, pb.AuthClient.RoleRevokePermission)
}
