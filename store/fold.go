package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The fold of an ended task's history (issue 14: RSS with 10,000 tasks).
// Every transaction that writes events puts one key under
// /tasks/{id}/events/ (packEvents): an install leaves ~10 of them, 59% of
// etcd's keys with 10,000 installed tasks, each ~220 bytes of etcd's key
// index in memory and a record in the db for as long as the task is kept.
// Once a task has ended longer ago than the compaction retention, the
// maintenance loop folds its event keys into one (foldedValue, under the
// oldest one's key). Not sooner: until a compaction, etcd keeps every
// revision, and a fold at the end of each install raised the etcd bytes per
// install from 7.1 to 9.8 KiB (rss150); a fold after the retention
// leaves that figure alone.
//
// A fold is one transaction per batch of tasks, guarded per task by the
// status's mod revision (the task is still the ended one that was read,
// and not deleted) and by every key under the task's events having a mod
// revision at most the read's (no event written, no bound's drop, which
// puts the dropped record, since). It puts the folded key before it
// deletes the keys it replaces (ranges: everything from the first folded
// key to the last, the folded key itself aside), so readers see the old
// keys or the folded one, never both nor neither; a crash leaves either.
// A batch whose guard fails is retried task by task; a task whose guard
// fails again is left for the next round (the index says it still has
// keys to fold). Every writer that deletes event keys without putting
// one under the same prefix deletes the status too (DeleteTask).

const (
	// foldBatch is how many tasks one fold transaction takes: 2 reads per
	// task in the read, 2 compares and at most 3 ops per task in the
	// write, within etcd's 128 operations per transaction.
	foldBatch = 32
	// foldRoundTasks and foldRoundTime bound one maintenance round's fold
	// (the member serves everything else between its transactions).
	foldRoundTasks = 4096
	foldRoundTime  = 5 * time.Second
	// foldMaxKeys bounds the keys one task's fold takes (the oldest;
	// the rest in a later round, after the folded key).
	foldMaxKeys = 512
)

// FoldStats is what one fold round did.
type FoldStats struct {
	Tasks     int // tasks folded
	Keys      int // event keys removed
	Conflicts int // tasks whose guard failed when folded alone: next round
	Skipped   int // tasks read with nothing to fold or undecodable events
	Txns      int // write transactions
	Left      int // candidates left for the next round (bounds)
	Bytes     int // folded values written (store/raftturnover.go)
}

// foldEndedEvents folds the event keys of up to maxTasks tasks that ended
// before endedBefore, in at most maxTime. It needs the task index (the
// candidates: ended, with more than one event key); before the index is
// loaded it does nothing.
func (s *Store) foldEndedEvents(ctx context.Context, endedBefore time.Time, maxTasks int, maxTime time.Duration) (FoldStats, error) {
	var st FoldStats
	ids := s.foldCandidates(endedBefore)
	if len(ids) > maxTasks {
		st.Left = len(ids) - maxTasks
		ids = ids[:maxTasks]
	}
	start := time.Now()
	for i := 0; i < len(ids); i += foldBatch {
		if ctx.Err() != nil || time.Since(start) > maxTime {
			st.Left += len(ids) - i
			break
		}
		if err := s.foldBatch(ctx, ids[i:min(i+foldBatch, len(ids))], endedBefore, &st); err != nil {
			return st, err
		}
	}
	return st, nil
}

// foldCandidates are the tasks the index knows ended before endedBefore
// with more than one event key.
func (s *Store) foldCandidates(endedBefore time.Time) []string {
	ix := &s.index
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if !ix.ready {
		return nil
	}
	var ids []string
	for id, e := range ix.tasks {
		if e.eventKeys > 1 && e.has == 3 && !e.t.Status.Status.Active() && e.t.Status.UpdatedAt.Before(endedBefore) {
			ids = append(ids, id)
		}
	}
	return ids
}

// foldPlan is one task's fold.
type foldPlan struct {
	cmps  []clientv3.Cmp
	ops   []clientv3.Op
	keys  int // event keys it removes
	bytes int // the folded value's length
}

// foldBatch reads ids' statuses and events at one revision and folds
// those still ended before endedBefore in one transaction; if its guard
// fails, each alone.
func (s *Store) foldBatch(ctx context.Context, ids []string, endedBefore time.Time, st *FoldStats) error {
	reads := make([]clientv3.Op, 0, 2*len(ids))
	for _, id := range ids {
		reads = append(reads, clientv3.OpGet(statusKey(id)),
			clientv3.OpGet(eventsPrefix(id), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)))
	}
	resp, err := s.cli.Txn(ctx).Then(reads...).Commit()
	if err != nil {
		return fmt.Errorf("fold: read %d tasks: %w", len(ids), err)
	}
	if s.foldRead != nil {
		s.foldRead()
	}
	rev := resp.Header.Revision
	var plans []foldPlan
	for i, id := range ids {
		status := resp.Responses[2*i].GetResponseRange().Kvs
		events := resp.Responses[2*i+1].GetResponseRange().Kvs
		p, ok := s.planFold(id, status, events, rev, endedBefore)
		if !ok {
			st.Skipped++
			continue
		}
		plans = append(plans, p)
	}
	if len(plans) == 0 {
		return nil
	}
	ok, err := s.commitFolds(ctx, plans, st)
	if err != nil || ok {
		return err
	}
	for _, p := range plans { // something changed under one of them
		ok, err := s.commitFolds(ctx, []foldPlan{p}, st)
		if err != nil {
			return err
		}
		if !ok {
			st.Conflicts++
		}
	}
	return nil
}

// commitFolds writes plans in one transaction.
func (s *Store) commitFolds(ctx context.Context, plans []foldPlan, st *FoldStats) (bool, error) {
	var (
		cmps []clientv3.Cmp
		ops  []clientv3.Op
	)
	for _, p := range plans {
		cmps = append(cmps, p.cmps...)
		ops = append(ops, p.ops...)
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	st.Txns++
	if err != nil {
		return false, fmt.Errorf("fold: write %d tasks: %w", len(plans), err)
	}
	if resp.Succeeded {
		for _, p := range plans {
			st.Tasks++
			st.Keys += p.keys
			st.Bytes += p.bytes
		}
	}
	return resp.Succeeded, nil
}

// planFold makes task id's fold from its status and event keys as read at
// rev (events in key order), or false: nothing to fold (not ended before
// endedBefore, fewer than two keys, an undecodable value: left as it is).
func (s *Store) planFold(id string, status, events []*mvccpb.KeyValue, rev int64, endedBefore time.Time) (foldPlan, bool) {
	if len(status) == 0 {
		return foldPlan{}, false
	}
	var rec StatusRecord
	if err := rec.UnmarshalJSON(status[0].Value); err != nil || rec.Status.Active() || !rec.UpdatedAt.Before(endedBefore) {
		return foldPlan{}, false
	}
	dk := droppedKey(id)
	keys := make([]*mvccpb.KeyValue, 0, len(events))
	for _, kv := range events {
		if string(kv.Key) != dk {
			keys = append(keys, kv)
		}
	}
	rest := ""
	if len(keys) > foldMaxKeys {
		rest = string(keys[foldMaxKeys].Key)
		keys = keys[:foldMaxKeys]
	}
	if len(keys) < 2 {
		return foldPlan{}, false
	}
	var evs []Event
	for _, kv := range keys {
		one, err := decodeEvents(string(kv.Key), kv.Value)
		if err != nil {
			s.log.Warn("store: fold: undecodable event, task left unfolded", "key", string(kv.Key), "error", err)
			return foldPlan{}, false
		}
		if !isFolded(kv.Value) {
			sortEvents(one) // as Events reads them
		}
		evs = append(evs, one...)
	}
	if len(evs) == 0 {
		return foldPlan{}, false
	}
	key := eventKey(id, firstAt(evs))
	if rest != "" && key >= rest {
		// Only with hundreds of keys of the decimal layout: the folded
		// key would sort after keys it does not take.
		s.log.Warn("store: fold: task left unfolded (its folded key would sort after its newer events)", "task", id)
		return foldPlan{}, false
	}
	first, last := string(keys[0].Key), string(keys[len(keys)-1].Key)+"\x00"
	folded := foldedValue(evs)
	p := foldPlan{
		cmps: []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(statusKey(id)), "=", status[0].ModRevision),
			clientv3.Compare(clientv3.ModRevision(eventsPrefix(id)), "<", rev+1).WithPrefix(),
		},
		// The folded key first: the progress cache takes the deletes
		// of its revision as the fold's (store/fastprogress.go).
		ops:   []clientv3.Op{clientv3.OpPut(key, folded)},
		keys:  len(keys),
		bytes: len(folded),
	}
	if slices.ContainsFunc(keys, func(kv *mvccpb.KeyValue) bool { return string(kv.Key) == key }) {
		p.keys-- // overwritten (the oldest key, as a rule), not removed
	}
	// Every key from first to last but the folded one: those read, as
	// the guard says no key came since.
	if first < key {
		p.ops = append(p.ops, clientv3.OpDelete(first, clientv3.WithRange(min(key, last))))
	}
	if after := key + "\x00"; after < last {
		p.ops = append(p.ops, clientv3.OpDelete(max(after, first), clientv3.WithRange(last)))
	}
	return p, true
}

// foldRound is the maintenance loop's fold (the cluster's leader only,
// every round): the tasks that ended longer ago than the compaction
// retention.
func (s *Store) foldRound(ctx context.Context) {
	if s.etcd == nil || s.etcd.Server.Leader() != s.etcd.Server.MemberID() {
		return
	}
	start := time.Now()
	st, err := s.foldEndedEvents(ctx, start.Add(-s.space.CompactionRetention), foldRoundTasks, foldRoundTime)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("store: fold of ended tasks' events failed (retried next round)", "error", err)
		}
		return
	}
	if st.Tasks > 0 || st.Conflicts > 0 {
		s.log.Info("store: folded ended tasks' events", "tasks", st.Tasks, "keys_removed", st.Keys,
			"transactions", st.Txns, "conflicts", st.Conflicts, "left", st.Left, "took", time.Since(start).Round(time.Millisecond))
	}
	s.noteFold(ctx, st) // store/raftturnover.go
}
