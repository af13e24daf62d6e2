package store

import (
	"context"
	"errors"
	"io"
	"log/slog"
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
		wantCode    codes.Code
		wantRemoved bool
		wantPanic   bool
	}{
		{"answer passes", func(context.Context, any) (any, error) { return "ok", nil }, codes.OK, false, false},
		{"error passes", func(context.Context, any) (any, error) { return nil, errors.New("boom") }, codes.Unknown, false, false},
		{"removed member answers Unavailable", func(context.Context, any) (any, error) {
			panic(removedMemberPanic) // what zap's Panic raises
		}, codes.Unavailable, true, false},
		{"other panics go on", func(context.Context, any) (any, error) { panic("something else") }, codes.OK, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			removed := false
			ic := recoverRemovedMember(log, func() { removed = true })
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
			if removed != tc.wantRemoved {
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
