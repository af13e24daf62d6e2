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
// id) the deletes of the oldest events that would exceed the task's limit
// once ops' new events are written, and the update of the record counting
// every dropped event. The task's status guard in the same transaction
// keeps two writers from trimming against different counts. It reads the
// task's event keys; a writer that read the task already passes its read
// to boundEventsIn instead.
func (s *Store) boundEvents(ctx context.Context, id string, ops []clientv3.Op) ([]clientv3.Op, error) {
	adding := newEvents(id, ops)
	if adding == 0 {
		return ops, nil
	}
	resp, err := s.cli.Get(ctx, eventsPrefix(id), clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("read event keys of %s: %w", id, err)
	}
	keys, hasRecord := eventKeys(id, resp.Kvs)
	drop := s.eventsToDrop(len(keys), adding, hasRecord)
	if drop == 0 {
		return ops, nil
	}
	var prev int64
	old, err := s.cli.Get(ctx, droppedKey(id))
	if err != nil {
		return nil, fmt.Errorf("read dropped-events record of %s: %w", id, err)
	}
	if len(old.Kvs) == 1 {
		prev = droppedCount(old.Kvs[0].Value)
	}
	return s.dropEvents(id, ops, keys[:drop], prev), nil
}

// boundEventsIn is boundEvents for a writer that read the task's keys
// already (kvs: a range read of taskPrefix(id), in key order, as GetTask
// makes; the transaction is guarded by what that read saw): no read of
// its own.
func (s *Store) boundEventsIn(id string, ops []clientv3.Op, kvs []*mvccpb.KeyValue) []clientv3.Op {
	adding := newEvents(id, ops)
	if adding == 0 {
		return ops
	}
	keys, hasRecord := eventKeys(id, kvs)
	drop := s.eventsToDrop(len(keys), adding, hasRecord)
	if drop == 0 {
		return ops
	}
	var prev int64
	if hasRecord {
		dk := droppedKey(id)
		for _, kv := range kvs {
			if string(kv.Key) == dk {
				prev = droppedCount(kv.Value)
			}
		}
	}
	return s.dropEvents(id, ops, keys[:drop], prev)
}

// newEvents counts the events ops write for task id.
func newEvents(id string, ops []clientv3.Op) int {
	prefix := eventsPrefix(id)
	n := 0
	for _, op := range ops {
		if op.IsPut() && strings.HasPrefix(string(op.KeyBytes()), prefix) {
			n++
		}
	}
	return n
}

// eventKeys picks task id's event keys out of kvs (in key order), all but
// the dropped-events record, and says whether that record is there.
func eventKeys(id string, kvs []*mvccpb.KeyValue) (keys []string, hasRecord bool) {
	prefix, dk := eventsPrefix(id), droppedKey(id)
	for _, kv := range kvs {
		switch k := string(kv.Key); {
		case k == dk:
			hasRecord = true
		case strings.HasPrefix(k, prefix):
			keys = append(keys, k)
		}
	}
	return keys, hasRecord
}

// eventsToDrop is how many of a task's n oldest events go when adding
// more are written.
func (s *Store) eventsToDrop(n, adding int, hasRecord bool) int {
	// The dropped record, once there, takes one of the max slots.
	budget := s.maxEvents
	if hasRecord {
		budget--
	}
	drop := n + adding - budget
	if drop <= 0 {
		return 0
	}
	if !hasRecord {
		drop++ // room for the record
	}
	return min(drop, n)
}

func droppedCount(val []byte) int64 {
	var ev Event
	if json.Unmarshal(val, &ev) != nil {
		return 0
	}
	return ev.Dropped
}

// dropEvents adds to ops the deletes of keys and the dropped-events
// record counting them on top of prev.
func (s *Store) dropEvents(id string, ops []clientv3.Op, keys []string, prev int64) []clientv3.Op {
	total := prev + int64(len(keys))
	for _, k := range keys {
		ops = append(ops, clientv3.OpDelete(k))
	}
	return append(ops, clientv3.OpPut(droppedKey(id), mustJSON(Event{
		At: time.Now().UTC(), Kind: EventKindDropped, Dropped: total,
		Message: fmt.Sprintf("%d older events dropped (history limit %d)", total, s.maxEvents),
	})))
}
