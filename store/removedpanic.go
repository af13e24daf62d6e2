package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// etcd v3.7.3's Status RPC asks the member whether it is a learner
// (RaftCluster.IsLocalMemberLearner), and that panics when the member is
// no longer in its own member list. A member that is being removed
// (`lpmos leave`, `lpmos member remove`) applies its removal a moment
// before it stops, and a Status call in that moment (this member's space
// check, another member's `member list` or health) took the whole process
// down before it could write its tombstone. The panic is etcd's
// "failed to find local ID in cluster members" (raised with no etcd lock
// held); only that one is turned into an Unavailable answer, every other
// panic goes on. Other panics of a stopping removed member (a read racing
// the closed backend panics in bbolt holding a lock) are not recovered:
// the tombstone is written the moment etcd says the member was removed
// (markRemoved), before it stops.
const removedMemberPanic = "failed to find local ID in cluster members"

// recoverRemovedMember is a gRPC unary interceptor for the embedded etcd
// server (innermost in etcd's chain, so it wraps the handler itself).
func recoverRemovedMember(log *slog.Logger, removed func()) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			r := recover()
			if r == nil {
				return
			}
			if !strings.Contains(fmt.Sprint(r), removedMemberPanic) {
				panic(r)
			}
			removed()
			log.Warn("store: etcd call on a member that was removed from its cluster", "method", info.FullMethod)
			resp, err = nil, status.Error(codes.Unavailable, "etcd: this member was removed from its cluster")
		}()
		return handler(ctx, req)
	}
}
