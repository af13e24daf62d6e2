package retry

import (
	"context"
	"testing"
	"time"
)

func TestDelayGrowsAndIsCapped(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	tests := []struct {
		attempt int
		lo, hi  time.Duration
	}{
		{0, 50 * time.Millisecond, 100 * time.Millisecond},
		{1, 100 * time.Millisecond, 200 * time.Millisecond},
		{3, 400 * time.Millisecond, 800 * time.Millisecond},
		{4, 500 * time.Millisecond, time.Second},
		{60, 500 * time.Millisecond, time.Second}, // no overflow
	}
	for _, tt := range tests {
		for range 50 {
			if d := b.Delay(tt.attempt); d < tt.lo || d > tt.hi {
				t.Fatalf("Delay(%d) = %v, want in [%v, %v]", tt.attempt, d, tt.lo, tt.hi)
			}
		}
	}
}

func TestSleepHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := Sleep(ctx, time.Hour); err == nil || time.Since(start) > time.Second {
		t.Fatalf("Sleep on a cancelled context: err=%v after %v", err, time.Since(start))
	}
}
