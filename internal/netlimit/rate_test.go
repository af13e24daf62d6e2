package netlimit

import (
	"fmt"
	"testing"
	"time"
)

func TestRate(t *testing.T) {
	now := time.Unix(1000, 0)
	r := NewRate(2, 3, 4) // 2/s, burst 3, 4 addresses
	r.now = func() time.Time { return now }
	steps := []struct {
		name      string
		advance   time.Duration
		key       string
		want      bool
		wantRetry time.Duration
	}{
		{"burst 1", 0, "a", true, 0},
		{"burst 2", 0, "a", true, 0},
		{"burst 3", 0, "a", true, 0},
		{"over the burst", 0, "a", false, 500 * time.Millisecond},
		{"another address has its own bucket", 0, "b", true, 0},
		{"a quarter second later: half a token", 250 * time.Millisecond, "a", false, 250 * time.Millisecond},
		{"half a second later: one token", 250 * time.Millisecond, "a", true, 0},
		{"and none left", 0, "a", false, 500 * time.Millisecond},
		{"long idle refills to the burst only", time.Hour, "a", true, 0},
		{"2", 0, "a", true, 0},
		{"3", 0, "a", true, 0},
		{"4 is over", 0, "a", false, 500 * time.Millisecond},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		ok, retry := r.Allow(s.key)
		if ok != s.want || retry != s.wantRetry {
			t.Errorf("%s: Allow(%s) = %v, %v; want %v, %v", s.name, s.key, ok, retry, s.want, s.wantRetry)
		}
	}
	if r.Limited() != 4 {
		t.Errorf("limited = %d, want 4", r.Limited())
	}
	// Peek tells without taking.
	if ok, _ := r.Peek("c"); !ok {
		t.Error("Peek on a new address")
	}
	for range 3 {
		if ok, _ := r.Allow("c"); !ok {
			t.Error("Peek took a token")
		}
	}
	if ok, retry := r.Peek("c"); ok || retry != 500*time.Millisecond || r.Limited() != 4 {
		t.Errorf("Peek on an empty bucket: %v %v, limited %d", ok, retry, r.Limited())
	}
}

func TestRateTableIsBounded(t *testing.T) {
	r := NewRate(1, 1, 100)
	for i := range 10000 {
		r.Allow(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
	}
	if r.Len() != 100 || r.Evicted() != 9900 {
		t.Fatalf("len %d evicted %d, want 100 and 9900", r.Len(), r.Evicted())
	}
	// The most recent addresses are the ones kept.
	if ok, _ := r.Allow("10.0.39.15"); ok { // i = 9999: its token is spent
		t.Error("the most recent address was forgotten")
	}
	var nilRate *Rate
	if ok, _ := nilRate.Allow("x"); !ok || NewRate(0, 5, 5) != nil {
		t.Error("a nil/zero-rate limiter must allow everything")
	}
}

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1:5555":               "10.0.0.1",
		"10.0.0.1":                    "10.0.0.1",
		"[::ffff:10.0.0.1]:80":        "10.0.0.1",
		"[2001:db8:1:2:3:4:5:6]:80":   "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:1234": "2001:db8:1:2::/64",
		"garbage":                     "garbage",
	} {
		if got := SourceKey(in); got != want {
			t.Errorf("SourceKey(%q) = %q, want %q", in, got, want)
		}
	}
}
