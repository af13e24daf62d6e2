package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultMaxTaskEvents bounds a task's event history: a machine that fails
// and is retried forever, or an agent that flips stages, cannot grow etcd
// without end.
const DefaultMaxTaskEvents = 200

// EventKindDropped is the kind of the event that records how many older
// events were dropped. It is always the task's first event.
const EventKindDropped = "dropped"

// droppedKey is the key of the "older events dropped" record: time zero
// in the decimal stamp of the first layout, so it sorts before every real
// event, in either layout (keys.go eventStamp).
func droppedKey(id string) string { return eventsPrefix(id) + "00000000000000000000" }

// boundEvents adds to ops (the transaction about to be committed for task
// id) the deletes of the oldest event keys that would put the task over
// its limit of events once ops' new events are written, and the update of
// the record counting every dropped event. The task's status guard in the
// same transaction keeps two writers from trimming against different
// counts. It reads the task's events; a writer that read the task already
// passes its read to boundEventsIn instead.
func (s *Store) boundEvents(ctx context.Context, id string, ops []clientv3.Op) ([]clientv3.Op, error) {
	if newEvents(id, ops) == 0 {
		return ops, nil
	}
	resp, err := s.cli.Get(ctx, eventsPrefix(id), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("read events of %s: %w", id, err)
	}
	return s.boundEventsIn(id, ops, resp.Kvs), nil
}

// boundEventsIn is boundEvents for a writer that read the task's keys
// already (kvs: a range read of taskPrefix(id) or eventsPrefix(id), in key
// order, as GetTask makes; the transaction is guarded by what that read
// saw): no read of its own.
func (s *Store) boundEventsIn(id string, ops []clientv3.Op, kvs []*mvccpb.KeyValue) []clientv3.Op {
	adding := newEvents(id, ops)
	if adding == 0 {
		return ops
	}
	prefix, dk := eventsPrefix(id), droppedKey(id)
	var (
		keys      []*mvccpb.KeyValue
		counts    []int
		hasRecord bool
		prev      int64
	)
	for _, kv := range kvs {
		switch k := string(kv.Key); {
		case k == dk:
			hasRecord = true
			var ev Event
			if json.Unmarshal(kv.Value, &ev) == nil {
				prev = ev.Dropped
			}
		case strings.HasPrefix(k, prefix):
			keys = append(keys, kv)
			counts = append(counts, eventCount(kv.Value))
		}
	}
	drop, dropped := s.eventsToDrop(counts, adding, hasRecord)
	if drop == 0 {
		return ops
	}
	// A folded key (store/fold.go) holds the task's whole history of
	// before: of the last key to go, only the events over the limit go.
	var keep *clientv3.Op
	if last := keys[drop-1]; isFolded(last.Value) {
		spare := dropped - s.excessEvents(counts, adding, hasRecord) // its newest, within the limit
		if evs, err := decodeEvents(string(last.Key), last.Value); err == nil && spare > 0 && spare < len(evs) {
			tail := evs[len(evs)-spare:]
			op := clientv3.OpPut(eventKey(id, firstAt(tail)), foldedValue(tail))
			keep, dropped = &op, dropped-spare
		}
	}
	total := prev + int64(dropped)
	for _, kv := range keys[:drop] {
		if keep == nil || string(kv.Key) != string(keep.KeyBytes()) {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
	}
	if keep != nil { // after the deletes: the progress cache counts none of them then
		ops = append(ops, *keep)
	}
	return append(ops, clientv3.OpPut(dk, mustJSON(Event{
		At: time.Now().UTC(), Kind: EventKindDropped, Dropped: total,
		Message: fmt.Sprintf("%d older events dropped (history limit %d)", total, s.maxEvents),
	})))
}

// newEvents counts the events ops write for task id.
func newEvents(id string, ops []clientv3.Op) int {
	prefix := eventsPrefix(id)
	n := 0
	for _, op := range ops {
		if op.IsPut() && strings.HasPrefix(string(op.KeyBytes()), prefix) {
			n += eventCount(op.ValueBytes())
		}
	}
	return n
}

// excessEvents is how many of a task's oldest events (counts: the events
// each of its keys holds, oldest first) must go when adding more events
// are written.
func (s *Store) excessEvents(counts []int, adding int, hasRecord bool) int {
	n := 0
	for _, c := range counts {
		n += c
	}
	// The dropped record, once there, takes one of the max slots.
	budget := s.maxEvents
	if hasRecord {
		budget--
	}
	excess := n + adding - budget
	if excess > 0 && !hasRecord {
		excess++ // room for the record
	}
	return excess
}

// eventsToDrop says how many of a task's oldest event keys (counts: the
// events each holds, oldest first) go, and how many events they hold,
// when adding more events are written.
func (s *Store) eventsToDrop(counts []int, adding int, hasRecord bool) (keys, events int) {
	excess := s.excessEvents(counts, adding, hasRecord)
	if excess <= 0 {
		return 0, 0
	}
	for keys < len(counts) && events < excess {
		events += counts[keys]
		keys++
	}
	return keys, events
}
