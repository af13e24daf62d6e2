package store

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRecoverRemovedMember(t *testing.T) {
	info := &grpc.UnaryServerInfo{FullMethod: "/etcdserverpb.Maintenance/Status"}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tests := []struct {
		name        string
		handler     grpc.UnaryHandler
		wasRemoved  bool // etcd already said this member was removed
		wantCode    codes.Code
		wantRemoved bool
		wantPanic   bool
	}{
		{"answer passes", func(context.Context, any) (any, error) { return "ok", nil }, false, codes.OK, false, false},
		{"error passes", func(context.Context, any) (any, error) { return nil, errors.New("boom") }, false, codes.Unknown, false, false},
		{"removed member answers Unavailable", func(context.Context, any) (any, error) {
			panic(removedMemberPanic) // what zap's Panic raises
		}, false, codes.Unavailable, true, false},
		{"other panics go on", func(context.Context, any) (any, error) { panic("something else") }, false, codes.OK, false, true},
		{"other panics go on, also once removed", func(context.Context, any) (any, error) { panic("nil transaction") }, true, codes.OK, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var flag atomic.Bool
			flag.Store(tc.wasRemoved)
			ic := recoverRemovedMember(log, func() { flag.Store(true) })
			var (
				resp     any
				err      error
				panicked any
			)
			func() {
				defer func() { panicked = recover() }()
				resp, err = ic(context.Background(), nil, info, tc.handler)
			}()
			if (panicked != nil) != tc.wantPanic {
				t.Fatalf("panic %v, want panic %v", panicked, tc.wantPanic)
			}
			if tc.wantPanic {
				return
			}
			if removed := flag.Load(); removed != tc.wantRemoved {
				t.Fatalf("removed %v, want %v", removed, tc.wantRemoved)
			}
			if got := status.Code(err); err != nil && got != tc.wantCode {
				t.Fatalf("code %v, want %v (err %v)", got, tc.wantCode, err)
			}
			if tc.wantCode == codes.OK && (err != nil || resp != "ok") {
				t.Fatalf("resp %v err %v, want ok", resp, err)
			}
		})
	}
}
