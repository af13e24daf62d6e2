package store

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// An ended task's history under one key (issue 14, rss150). Each
// transaction that writes events puts them under a key of their own
// (packEvents), so an installed task had ~10 event keys, 58% of the keys
// in etcd and of etcd's in-memory key index. When a task ends (completed,
// failed, cancelled), the transaction that ends it also folds the events
// before its own into one history key and deletes their keys: after
// compaction the task has two event keys (the history and the ending
// transaction's), plus the dropped record when the bound dropped some.
//
// The history key is the event key of stamp 1 (ns) in the decimal layout:
// it sorts after the dropped record (stamp 0) and before every real
// event, in either layout (keys.go eventStamp), where its events were. Its
// value is the events in the order Events returned them (eventsList, "o"
// counted from the key's stamp); Events does not re-sort it. Watchers
// skip it (taskKeyKind calls it "history", not "events"): its events were
// each published when first written, and the ending transaction's own
// events keep their key, so the watch feed (/ws) sees what it saw before.
// A task written before the fold (a previous release) reads as it did;
// it is folded when it next ends (a retry, then an end). The progress
// path's batch, which completes tasks without reading their events, has
// them folded just after, in a transaction of their own (foldHistory): an
// installed task then keeps one event key.
const historyStamp = "00000000000000000001"

func historyKey(id string) string { return eventsPrefix(id) + historyStamp }

// historyBase is the time historyStamp stands for.
func historyBase() time.Time { return time.Unix(0, 1).UTC() }

// historyValue is the stored form of evs (in Events order) under
// historyKey: always a list.
func historyValue(evs []Event) string { return eventsList(evs, historyBase()) }

// keyEvents decodes the events stored under one event key in the order
// Events returns them: a history as stored, another key's in time order.
func keyEvents(key string, val []byte) ([]Event, error) {
	evs, err := decodeEvents(key, val)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(key, "/"+historyStamp) {
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].At.Before(evs[j].At) }) // one key's: in time order, as when each had its own
	}
	return evs, nil
}

// foldEvents adds to ops (the transaction that ends task id, its events
// already packed and bounded: boundEventsIn) the fold of the task's older
// event keys into historyKey. kvs is the task's keys as read under the
// transaction's guard, in key order. Keys that sort after the ending
// transaction's own event key (a clock stepped back) stay as they are, so
// the order Events returns is unchanged. Fewer than two keys to fold:
// ops as they are.
func foldEvents(id string, ops []clientv3.Op, kvs []*mvccpb.KeyValue) []clientv3.Op {
	prefix, dk, hk := eventsPrefix(id), droppedKey(id), historyKey(id)
	newKey := ""
	deleted := map[string]bool{}
	var rewritten []byte // the bound's trimmed history, if it trimmed it
	for _, op := range ops {
		k := string(op.KeyBytes())
		if !strings.HasPrefix(k, prefix) || k == dk {
			continue
		}
		switch {
		case op.IsDelete():
			deleted[k] = true
		case k == hk:
			rewritten = op.ValueBytes()
		case op.IsPut() && (newKey == "" || k < newKey):
			newKey = k
		}
	}
	var (
		srcs []*mvccpb.KeyValue
		evs  []Event
	)
	for _, kv := range kvs {
		k := string(kv.Key)
		if !strings.HasPrefix(k, prefix) || k == dk || newKey != "" && k >= newKey || deleted[k] && k != hk {
			continue
		}
		srcs = append(srcs, kv)
		if deleted[k] {
			continue // the history, dropped whole by the bound
		}
		val := kv.Value
		if k == hk && rewritten != nil {
			val = rewritten
		}
		e, err := keyEvents(k, val)
		if err != nil {
			return ops // an undecodable key: left as it is, nothing folded
		}
		evs = append(evs, e...)
	}
	if len(srcs) < 2 {
		return ops
	}
	out := make([]clientv3.Op, 0, len(ops)+len(srcs)+1)
	for _, op := range ops {
		if string(op.KeyBytes()) != hk {
			out = append(out, op)
		}
	}
	for _, kv := range srcs {
		if k := string(kv.Key); k != hk && !deleted[k] {
			out = append(out, clientv3.OpDelete(k))
		}
	}
	switch {
	case len(evs) > 0:
		out = append(out, clientv3.OpPut(hk, historyValue(evs)))
	case string(srcs[0].Key) == hk:
		out = append(out, clientv3.OpDelete(hk))
	}
	return out
}

// foldHistory folds the event keys of task id, ended by a transaction
// that could not (the progress path's batch completes tasks without
// reading their events): every event key but the dropped record into
// historyKey, guarded by the status the read saw. A task that is active
// again, or changed meanwhile, is left as it is (its next end folds it).
func (s *Store) foldHistory(ctx context.Context, id string) error {
	resp, err := s.cli.Get(ctx, taskPrefix(id), clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("read task %s: %w", id, err)
	}
	tasks := assembleTasks(resp.Kvs, s.log)
	if len(tasks) == 0 || tasks[0].Status.Status.Active() {
		return nil
	}
	ops := foldEvents(id, nil, resp.Kvs)
	if len(ops) == 0 {
		return nil
	}
	_, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(statusKey(id)), "=", tasks[0].Revision)).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("fold the history of %s: %w", id, err)
	}
	return nil
}
