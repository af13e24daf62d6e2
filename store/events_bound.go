package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

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
// keeps two writers from trimming against different counts.
func (s *Store) boundEvents(ctx context.Context, id string, ops []clientv3.Op) ([]clientv3.Op, error) {
	prefix := eventsPrefix(id)
	adding := 0
	for _, op := range ops {
		if op.IsPut() && strings.HasPrefix(string(op.KeyBytes()), prefix) {
			adding++
		}
	}
	if adding == 0 {
		return ops, nil
	}
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("read event keys of %s: %w", id, err)
	}
	dk := droppedKey(id)
	var keys []string
	hasRecord := false
	for _, kv := range resp.Kvs {
		if k := string(kv.Key); k != dk {
			keys = append(keys, k)
		} else {
			hasRecord = true
		}
	}
	// The dropped record, once there, takes one of the max slots.
	budget := s.maxEvents
	if hasRecord {
		budget--
	}
	drop := len(keys) + adding - budget
	if drop <= 0 {
		return ops, nil
	}
	if !hasRecord {
		drop++ // room for the record
	}
	drop = min(drop, len(keys))
	if drop == 0 {
		return ops, nil
	}
	var prev int64
	old, err := s.cli.Get(ctx, dk)
	if err != nil {
		return nil, fmt.Errorf("read dropped-events record of %s: %w", id, err)
	}
	if len(old.Kvs) == 1 {
		var ev Event
		if json.Unmarshal(old.Kvs[0].Value, &ev) == nil {
			prev = ev.Dropped
		}
	}
	total := prev + int64(drop)
	for _, k := range keys[:drop] {
		ops = append(ops, clientv3.OpDelete(k))
	}
	ops = append(ops, clientv3.OpPut(dk, mustJSON(Event{
		At: time.Now().UTC(), Kind: EventKindDropped, Dropped: total,
		Message: fmt.Sprintf("%d older events dropped (history limit %d)", total, s.maxEvents),
	})))
	return ops, nil
}
