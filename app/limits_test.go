package app

import "testing"

func TestConnCap(t *testing.T) {
	tests := []struct {
		name     string
		maxConns int
		nofile   uint64
		want     int
	}{
		{"1024 descriptors: (1024-256)/2", 0, 1024, 384},
		{"a huge limit: capped at 10000", 0, 1 << 20, 10000},
		{"unknown limit", 0, 0, 10000},
		{"tiny limit keeps a floor", 0, 64, 16},
		{"operator's choice below the budget", 100, 1024, 100},
		{"operator's choice above the budget is lowered", 5000, 1024, 384},
		{"operator may go past 10000 with the descriptors for it", 50000, 1 << 20, 50000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := connCap(tc.maxConns, tc.nofile); got != tc.want {
				t.Errorf("connCap(%d, %d) = %d, want %d", tc.maxConns, tc.nofile, got, tc.want)
			}
		})
	}
}
