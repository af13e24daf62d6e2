package store

import (
	"testing"
	"time"
)

// Members take turns: at any instant exactly one member of a cluster may
// defragment, and each gets its turn within one round.
func TestDefragTurnOneMemberAtATime(t *testing.T) {
	t.Parallel()
	const interval = 10 * time.Second
	start := time.Date(2026, 12, 1, 15, 0, 0, 0, time.UTC)
	for _, ids := range [][]uint64{{7}, {0x9a, 0x12}, {0xc3, 0x5b, 0x21}, {5, 4, 3, 2, 1}} {
		turns := map[uint64]int{}
		for step := time.Duration(0); step < time.Duration(len(ids))*interval*3; step += interval / 4 {
			now := start.Add(step)
			n := 0
			for _, id := range ids {
				if defragTurn(ids, id, now, interval) {
					n++
					turns[id]++
				}
			}
			if n != 1 {
				t.Fatalf("members %x at %s: %d may defragment, want exactly 1", ids, now, n)
			}
		}
		for _, id := range ids {
			if turns[id] == 0 {
				t.Fatalf("members %x: %x never got a turn", ids, id)
			}
		}
		if defragTurn(ids, 0xffff, start, interval) && len(ids) > 1 {
			t.Fatalf("a member not in %x got a turn", ids)
		}
	}
}
