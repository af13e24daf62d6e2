package ui

import (
	"fmt"
	"slices"
	"testing"
)

// popAll drains q.
func popAll(q *outQueue) []string {
	var out []string
	for {
		b, ok := q.pop()
		if !ok {
			return out
		}
		out = append(out, string(b))
	}
}

// A client's queue keeps every message that does not coalesce, in order,
// and only the latest unsent state message of each (task, kind); a state
// message never jumps ahead of an earlier message of its task.
func TestOutQueueCoalescesStateKeepsOrder(t *testing.T) {
	t.Parallel()
	q := newOutQueue()
	push := func(task, b string, kind uint8) {
		t.Helper()
		if !q.push(task, []byte(b), kind, 1024, 1<<20) {
			t.Fatalf("push %s: resync asked", b)
		}
	}
	push("a", "a-progress-1", coalesceProgress)
	push("b", "b-progress-1", coalesceProgress)
	push("a", "a-power-1", coalescePower)
	push("a", "a-progress-2", coalesceProgress) // replaces a-progress-1 in place
	push("a", "a-power-2", coalescePower)       // replaces a-power-1
	push("a", "a-status-installing", coalesceNone)
	push("a", "a-progress-3", coalesceProgress) // after the status: a new entry
	push("b", "b-progress-2", coalesceProgress) // b had no other message: replaces
	push("", "machine-1", coalesceNone)
	push("a", "a-event-1", coalesceNone)
	push("a", "a-event-2", coalesceNone)
	push("a", "a-progress-4", coalesceProgress) // after the events: a new entry
	push("a", "a-progress-5", coalesceProgress) // replaces a-progress-4
	push("a", "a-hardware-1", coalesceHardware)
	push("a", "a-hardware-2", coalesceHardware)
	push("a", "a-disk-1", coalesceTargetDisk)
	push("a", "a-bmc-1", coalesceBMC)
	push("a", "a-disk-2", coalesceTargetDisk)
	want := []string{"a-progress-2", "b-progress-2", "a-power-2", "a-status-installing", "a-progress-3", "machine-1",
		"a-event-1", "a-event-2", "a-progress-5", "a-hardware-2", "a-disk-2", "a-bmc-1"}
	if got := popAll(q); !slices.Equal(got, want) {
		t.Fatalf("popped\n%q\nwant\n%q", got, want)
	}
	// Once sent, the next state message is queued anew.
	push("a", "a-progress-6", coalesceProgress)
	if got := popAll(q); !slices.Equal(got, []string{"a-progress-6"}) {
		t.Fatalf("after drain: %q", got)
	}
}

// A client is resynced only when its backlog of messages that do not
// coalesce is past both the message and the byte bound; state messages
// never count, however many arrive.
func TestOutQueueResyncOnlyPastBothBounds(t *testing.T) {
	t.Parallel()
	q := newOutQueue()
	msg := make([]byte, 100)
	for i := range 50 { // 50 messages, 5,000 bytes: past 10 messages, not past 8,000 bytes
		if !q.push("t", msg, coalesceNone, 10, 8000) {
			t.Fatalf("message %d: resync asked below the byte bound", i)
		}
	}
	for i := range 10000 {
		if !q.push(fmt.Sprintf("t%d", i%100), msg, coalesceProgress, 10, 8000) {
			t.Fatal("a state message asked for a resync")
		}
	}
	for i := 50; i < 100; i++ {
		if !q.push("t", msg, coalesceNone, 10, 8000) {
			if i*100+100 <= 8000 {
				t.Fatalf("resync at %d messages, %d bytes", i, i*100)
			}
			if got := len(popAll(q)); got != i+100 {
				t.Fatalf("queued %d, want %d messages and 100 coalesced progress", got, i+100)
			}
			q.reset([]byte("snapshot"))
			if got := popAll(q); !slices.Equal(got, []string{"snapshot"}) {
				t.Fatalf("after reset: %q", got)
			}
			return
		}
	}
	t.Fatal("no resync past both bounds")
}
