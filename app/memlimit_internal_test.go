package app

import (
	"log/slog"
	"math"
	"runtime/debug"
	"testing"
)

func TestParseMemoryLimit(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{"", -1, false},
		{"off", math.MaxInt64, false},
		{"0", math.MaxInt64, false},
		{"160MiB", 160 << 20, false},
		{" 1GiB ", 1 << 30, false},
		{"1 GiB", 1 << 30, false},
		{"65536KiB", 64 << 20, false},
		{"104857600", 100 << 20, false},
		{"104857600B", 100 << 20, false},
		{"16MiB", 0, true}, // below the floor
		{"160MB", 0, true}, // GOMEMLIMIT's units only
		{"-5MiB", 0, true},
		{"lots", 0, true},
		{"9999999TiB", 0, true},
	} {
		got, err := parseMemoryLimit(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("parseMemoryLimit(%q) = %d, want an error", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("parseMemoryLimit(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
}

// The flag's limit is the runtime's; "" leaves what is in force.
func TestApplyMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	applyMemoryLimit(slog.New(slog.DiscardHandler), 200<<20)
	if got := debug.SetMemoryLimit(-1); got != 200<<20 {
		t.Fatalf("limit %d after --memory-limit 200MiB", got)
	}
	applyMemoryLimit(slog.New(slog.DiscardHandler), -1)
	if got := debug.SetMemoryLimit(-1); got != 200<<20 {
		t.Fatalf("limit %d after an empty --memory-limit, want it unchanged", got)
	}
	applyMemoryLimit(slog.New(slog.DiscardHandler), math.MaxInt64)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("limit %d after --memory-limit off", got)
	}
}
