package install

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

// TestTickHonoursServerInterval: within a stage, reports keep the longer
// of ProgressInterval and the interval the server last asked for; stage
// boundaries are always sent.
func TestTickHonoursServerInterval(t *testing.T) {
	for _, tc := range []struct {
		name   string
		server time.Duration
		want   int // reports of stage + 3 ticks
	}{
		{"no request from the server", 0, 4},
		{"server asks for a minute", time.Minute, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent := 0
			in := &installer{log: slog.New(slog.NewTextHandler(io.Discard, nil)), o: Options{
				ProgressInterval: time.Nanosecond,
				NextInterval:     func() time.Duration { return tc.server },
				Report:           func(context.Context, Progress) error { sent++; return nil },
			}}
			ctx := context.Background()
			if err := in.stage(ctx, Progress{Stage: "downloading", Percentage: 20}); err != nil {
				t.Fatal(err)
			}
			for pct := 21; pct <= 23; pct++ {
				time.Sleep(time.Millisecond)
				if err := in.tick(ctx, Progress{Stage: "downloading", Percentage: pct}); err != nil {
					t.Fatal(err)
				}
			}
			if sent != tc.want {
				t.Fatalf("sent %d reports, want %d", sent, tc.want)
			}
		})
	}
}
