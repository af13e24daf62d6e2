package store

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/lpmos/lpmos/agent/disksel"
	"github.com/lpmos/lpmos/agent/wire"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxTxnRetries bounds optimistic-concurrency retries of one operation.
const maxTxnRetries = 20

// newID returns a random RFC 4122 version 4 UUID.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// mustJSON is mustMarshal's bytes as a string (what etcd's ops take).
func mustJSON(v any) string { return string(mustMarshal(v)) }

// mustMarshal is json.Marshal of one of our own types, which always
// marshal. The list's kept JSON takes its bytes as they are: converting
// them to a string and back copied the whole answer into fresh heap twice,
// and on the first list after a start (every task marshalled, 11.7 MB for
// 10,000 installed tasks) the page faults of those copies were 42% of the
// list's CPU.
func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("store: marshal %T: %v", v, err)) // our own types always marshal
	}
	return b
}

func eventOp(id string, ev Event) clientv3.Op {
	return clientv3.OpPut(eventKey(id, ev.At), eventValue(ev))
}

// packEvents writes the events ops put for task id under one key (the
// oldest one's, eventsValue): a transaction's events cost one etcd record,
// not one each. ops without two events come back as they are.
func packEvents(id string, ops []clientv3.Op) []clientv3.Op {
	prefix, dk := eventsPrefix(id), droppedKey(id)
	n := 0
	for _, op := range ops {
		if k := string(op.KeyBytes()); op.IsPut() && strings.HasPrefix(k, prefix) && k != dk {
			n++
		}
	}
	if n < 2 {
		return ops
	}
	out := make([]clientv3.Op, 0, len(ops)-n+1)
	var evs []Event
	at := -1
	for _, op := range ops {
		if k := string(op.KeyBytes()); op.IsPut() && strings.HasPrefix(k, prefix) && k != dk {
			if ev, err := decodeEvent(k, op.ValueBytes()); err == nil {
				if at < 0 {
					at = len(out)
					out = append(out, op)
				}
				evs = append(evs, ev)
				continue
			}
		}
		out = append(out, op)
	}
	if len(evs) < 2 {
		return ops
	}
	out[at] = clientv3.OpPut(eventKey(id, firstAt(evs)), eventsValue(evs))
	return out
}

// CreateTask stores a new pending task. A second active task for the same
// MAC is refused with ErrConflict, atomically: the MAC index and the task's
// status are both compared in the transaction that writes the new task.
func (s *Store) CreateTask(ctx context.Context, spec Spec, opts ...CreateOption) (Task, error) {
	if err := spec.Validate(); err != nil {
		return Task{}, err
	}
	now := time.Now().UTC()
	spec.CreatedAt = now
	id := newID()
	extra, bmcInfo, err := s.createOps(ctx, id, spec.TargetMAC, now, opts) // store/bmc.go
	if err != nil {
		return Task{}, err
	}
	st := StatusRecord{Status: wire.StatusPending, UpdatedAt: now, Attempt: 1}
	for range maxTxnRetries {
		cmps, err := s.macFreeGuard(ctx, spec.TargetMAC, "")
		if err != nil {
			return Task{}, err
		}
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(append([]clientv3.Op{
			clientv3.OpPut(specKey(id), mustJSON(spec)),
			clientv3.OpPut(statusKey(id), statusValue(st)),
			clientv3.OpPut(macIndexKey(spec.TargetMAC), id),
			eventOp(id, Event{At: now, Kind: "status", To: wire.StatusPending, Message: "task created"}),
		}, extra...)...).Commit()
		if err != nil {
			return Task{}, fmt.Errorf("create task: %w", err)
		}
		if resp.Succeeded {
			return Task{ID: id, Spec: spec, Status: st, Revision: resp.Header.Revision, BMC: bmcInfo}, nil
		}
	}
	return Task{}, fmt.Errorf("create task: %w: too much contention on MAC %s", ErrConflict, spec.TargetMAC)
}

// macFreeGuard returns the comparisons that hold while no task other than
// self is active for mac, or ErrConflict if one is active now.
func (s *Store) macFreeGuard(ctx context.Context, mac, self string) ([]clientv3.Cmp, error) {
	idx, err := s.cli.Get(ctx, macIndexKey(mac))
	if err != nil {
		return nil, fmt.Errorf("read MAC index: %w", err)
	}
	if len(idx.Kvs) == 0 {
		return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(macIndexKey(mac)), "=", 0)}, nil
	}
	kv := idx.Kvs[0]
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(macIndexKey(mac)), "=", kv.ModRevision)}
	other := string(kv.Value)
	if other == self {
		return cmps, nil
	}
	st, rev, err := s.status(ctx, other)
	switch {
	case errors.Is(err, ErrNotFound):
		// The index points at a deleted task: free.
		return append(cmps, clientv3.Compare(clientv3.CreateRevision(statusKey(other)), "=", 0)), nil
	case err != nil:
		return nil, err
	case st.Status.Active():
		return nil, fmt.Errorf("%w: MAC %s already has active task %s (%s)", ErrConflict, mac, other, st.Status)
	}
	return append(cmps, clientv3.Compare(clientv3.ModRevision(statusKey(other)), "=", rev)), nil
}

func (s *Store) status(ctx context.Context, id string) (StatusRecord, int64, error) {
	resp, err := s.cli.Get(ctx, statusKey(id))
	if err != nil {
		return StatusRecord{}, 0, fmt.Errorf("read status of %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return StatusRecord{}, 0, fmt.Errorf("%w: task %s", ErrNotFound, id)
	}
	var st StatusRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &st); err != nil {
		return StatusRecord{}, 0, fmt.Errorf("decode status of %s: %w", id, err)
	}
	return st, resp.Kvs[0].ModRevision, nil
}

// GetTask reads one task with its hardware and progress.
func (s *Store) GetTask(ctx context.Context, id string) (Task, error) {
	t, _, err := s.readTask(ctx, id)
	return t, err
}

// readTask is GetTask that also returns the keys it read (every key of
// the task, events included, in key order).
func (s *Store) readTask(ctx context.Context, id string) (Task, []*mvccpb.KeyValue, error) {
	if !validTaskID(id) {
		return Task{}, nil, fmt.Errorf("%w: task %s", ErrNotFound, id)
	}
	resp, err := s.cli.Get(ctx, taskPrefix(id), clientv3.WithPrefix())
	if err != nil {
		return Task{}, nil, fmt.Errorf("read task %s: %w", id, err)
	}
	tasks := assembleTasks(resp.Kvs, s.log)
	if len(tasks) == 0 {
		return Task{}, nil, fmt.Errorf("%w: task %s", ErrNotFound, id)
	}
	return tasks[0], resp.Kvs, nil
}

func validTaskID(id string) bool {
	if len(id) != 36 {
		return false
	}
	for _, r := range id {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r == '-') {
			return false
		}
	}
	return true
}

// Filter selects tasks in ListTasks; empty fields match everything.
type Filter struct {
	Status Status
	Region string
	MAC    string
}

func (f Filter) match(t Task) bool {
	return (f.Status == "" || t.Status.Status == f.Status) &&
		(f.Region == "" || t.Spec.RegionID == f.Region) &&
		(f.MAC == "" || t.Spec.TargetMAC == f.MAC)
}

// ListTasks returns the matching tasks, newest first, read at one revision
// so the list is a consistent snapshot. It also returns that revision:
// a watch from revision+1 misses nothing.
//
// It is one range read: etcd counts every key of a range even when a limit
// pages it, so paging a big range costs O(n^2); one read is O(n).
func (s *Store) ListTasks(ctx context.Context, f Filter) ([]Task, int64, error) {
	resp, err := s.cli.Get(ctx, prefixTasks, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("list tasks: %w", err)
	}
	all := assembleTasks(resp.Kvs, s.log)
	out := all[:0]
	for _, t := range all {
		if f.match(t) {
			out = append(out, t)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Spec.CreatedAt.After(out[j].Spec.CreatedAt) })
	return out, resp.Header.Revision, nil
}

// TaskByMAC returns the task the MAC index points at (the active task, or
// the most recent one once it ended), or ErrNotFound.
func (s *Store) TaskByMAC(ctx context.Context, mac string) (Task, error) {
	mac, err := ParseMAC(mac)
	if err != nil {
		return Task{}, err
	}
	resp, err := s.cli.Get(ctx, macIndexKey(mac))
	if err != nil {
		return Task{}, fmt.Errorf("read MAC index: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Task{}, fmt.Errorf("%w: no task for MAC %s", ErrNotFound, mac)
	}
	return s.GetTask(ctx, string(resp.Kvs[0].Value))
}

// Events returns the history of a task, oldest first.
func (s *Store) Events(ctx context.Context, id string) ([]Event, error) {
	if !validTaskID(id) {
		return nil, fmt.Errorf("%w: task %s", ErrNotFound, id)
	}
	resp, err := s.cli.Get(ctx, eventsPrefix(id), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("read events of %s: %w", id, err)
	}
	out := make([]Event, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		evs, err := decodeEvents(string(kv.Key), kv.Value)
		if err != nil {
			s.log.Warn("store: skip undecodable event", "key", string(kv.Key), "error", err)
			continue
		}
		if !isFolded(kv.Value) { // a folded key's are in this order already (store/fold.go)
			sortEvents(evs)
		}
		out = append(out, evs...)
	}
	return out, nil
}

// sortEvents puts one key's events in time order, as when each had its
// own key.
func sortEvents(evs []Event) {
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].At.Before(evs[j].At) })
}

// Transition moves a task to status `to` if the state machine allows it from
// the current status. The write is one transaction guarded by the status's
// mod revision, so of two concurrent approvals exactly one wins; the other
// gets a *TransitionError naming the status it found.
func (s *Store) Transition(ctx context.Context, id string, to Status, reason string) (Task, error) {
	return s.transition(ctx, id, to, reason, nil)
}

// transition is Transition with extra ops written in the same transaction,
// computed from the current task.
func (s *Store) transition(ctx context.Context, id string, to Status, reason string, extra func(t Task) ([]clientv3.Op, []clientv3.Cmp, error)) (Task, error) {
	for range maxTxnRetries {
		t, kvs, err := s.readTask(ctx, id)
		if err != nil {
			return Task{}, err
		}
		from := t.Status.Status
		if !CanTransition(from, to) {
			return t, &TransitionError{ID: id, From: from, To: to}
		}
		now := time.Now().UTC()
		st := StatusRecord{Status: to, Reason: reason, UpdatedAt: now, Attempt: t.Status.Attempt}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(statusKey(id)), "=", t.Revision)}
		ops := []clientv3.Op{
			clientv3.OpPut(statusKey(id), statusValue(st)),
			eventOp(id, Event{At: now, Kind: "status", From: from, To: to, Message: reason}),
		}
		if to == wire.StatusPending { // retry: a new attempt, which must own the MAC again
			st.Attempt++
			st.Reason = ""
			ops[0] = clientv3.OpPut(statusKey(id), statusValue(st))
			guard, err := s.macFreeGuard(ctx, t.Spec.TargetMAC, id)
			if err != nil {
				return t, err
			}
			cmps = append(cmps, guard...)
			ops = append(ops,
				clientv3.OpPut(macIndexKey(t.Spec.TargetMAC), id),
				clientv3.OpDelete(progressKey(id)),
				clientv3.OpDelete(hardwareKey(id)),
				clientv3.OpDelete(bootstrapKey(id)),
				clientv3.OpDelete(targetDiskKey(id)),
			)
			// The session stays: the live agent of the ended attempt,
			// still polling with it, is handed a fresh one (agentapi).
		}
		if !to.Active() {
			ops = append(ops, clientv3.OpDelete(bootstrapKey(id))) // an unredeemed boot token dies with the task
		}
		if extra != nil {
			xops, xcmps, err := extra(t)
			if err != nil {
				return t, err
			}
			ops = append(ops, xops...)
			cmps = append(cmps, xcmps...)
		}
		ops = s.boundEventsIn(id, packEvents(id, ops), kvs)
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return Task{}, fmt.Errorf("move task %s to %s: %w", id, to, err)
		}
		if resp.Succeeded {
			t.Status = st
			t.Revision = resp.Header.Revision
			return t, nil
		}
	}
	return Task{}, fmt.Errorf("move task %s to %s: %w: too much contention", id, to, ErrConflict)
}

// SetHardware records the agent's hardware report and the disk the install
// will erase (see disks.go). A ready task moves to pending_approval in the
// same transaction; a task already waiting for approval (the machine
// rebooted) gets the fresh report and a fresh choice. When no disk can be
// chosen (no match, several, too small), the task fails at once with the
// disks in the reason: nothing is ever written.
func (s *Store) SetHardware(ctx context.Context, id string, hw wire.Hardware) (Task, error) {
	var chosen *TargetDisk
	hwOp := func(t Task) ([]clientv3.Op, []clientv3.Cmp, error) {
		td, err := s.chooseDisk(ctx, t.Spec, hw)
		if err != nil {
			return nil, nil, err
		}
		chosen = td
		return append([]clientv3.Op{clientv3.OpPut(hardwareKey(id), mustJSON(hw))}, diskOps(id, t.Spec, td)...), nil, nil
	}
	t, err := s.transition(ctx, id, wire.StatusPendingApproval, "hardware reported", hwOp)
	var te *TransitionError
	if errors.As(err, &te) && te.From == wire.StatusPendingApproval {
		td, err := s.chooseDisk(ctx, t.Spec, hw)
		if disksel.IsSelection(err) {
			return s.failOnDisk(ctx, id, hw, err)
		}
		if err != nil {
			return Task{}, err
		}
		ops := []clientv3.Op{clientv3.OpPut(hardwareKey(id), mustJSON(hw))}
		if td == nil || t.TargetDisk == nil || td.Disk != t.TargetDisk.Disk {
			ops = append(ops, diskOps(id, t.Spec, td)...)
		}
		resp, err := s.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(statusKey(id)), "=", t.Revision),
		).Then(ops...).Commit()
		if err != nil {
			return Task{}, fmt.Errorf("store hardware of %s: %w", id, err)
		}
		if !resp.Succeeded {
			return s.SetHardware(ctx, id, hw)
		}
		t.Hardware, t.TargetDisk = &hw, td
		return t, nil
	}
	if disksel.IsSelection(err) {
		return s.failOnDisk(ctx, id, hw, err)
	}
	if err != nil {
		return t, err
	}
	t.Hardware, t.TargetDisk = &hw, chosen
	return t, nil
}

// ProgressResult says what ReportProgress did.
type ProgressResult struct {
	Task      Task
	Duplicate bool // same seq as the stored report: accepted, ignored
}

// ReportProgress stores an agent's progress for the task's current attempt.
// Reports are monotonic by seq: a repeat is a no-op, a lower seq is refused
// with ErrRegression. An approved or stalled task moves to installing in the
// same transaction.
func (s *Store) ReportProgress(ctx context.Context, id string, p wire.Progress) (ProgressResult, error) {
	return s.reportProgress(ctx, id, p, nil)
}

// reportProgress is ReportProgress with an extra check of the report
// against the stored one (nil when none), run inside the guarded
// read-modify-write so concurrent reports cannot slip past it.
func (s *Store) reportProgress(ctx context.Context, id string, p wire.Progress, check func(old *wire.Progress, attempt int) error) (ProgressResult, error) {
	if p.Percentage < 0 || p.Percentage > 100 {
		return ProgressResult{}, fmt.Errorf("%w: percentage %d is outside 0-100", ErrInvalid, p.Percentage)
	}
	if err := validatePartitions(p.Partitions); err != nil {
		return ProgressResult{}, err
	}
	for range maxTxnRetries {
		resp, err := s.cli.Get(ctx, taskPrefix(id), clientv3.WithPrefix())
		if err != nil {
			return ProgressResult{}, fmt.Errorf("read task %s: %w", id, err)
		}
		tasks := assembleTasks(resp.Kvs, s.log)
		if len(tasks) == 0 {
			return ProgressResult{}, fmt.Errorf("%w: task %s", ErrNotFound, id)
		}
		t := tasks[0]
		cur := t.Status.Status
		switch cur {
		case wire.StatusApproved, wire.StatusInstalling, wire.StatusStalled:
		default:
			return ProgressResult{Task: t}, &TransitionError{ID: id, From: cur, To: wire.StatusInstalling}
		}
		var progRev int64
		for _, kv := range resp.Kvs {
			if string(kv.Key) == progressKey(id) {
				progRev = kv.ModRevision
			}
		}
		if old := t.Progress; old != nil && old.Attempt == t.Status.Attempt {
			if p.Seq == old.Seq {
				return ProgressResult{Task: t, Duplicate: true}, nil
			}
			if p.Seq < old.Seq {
				return ProgressResult{Task: t}, fmt.Errorf("%w: seq %d is older than stored seq %d", ErrRegression, p.Seq, old.Seq)
			}
		}
		if check != nil {
			if err := check(t.Progress, t.Status.Attempt); err != nil {
				return ProgressResult{Task: t}, err
			}
		}
		now := time.Now().UTC()
		p.TaskID = id
		p.Attempt = t.Status.Attempt
		p.UpdatedAt = now
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(statusKey(id)), "=", t.Revision),
			clientv3.Compare(clientv3.ModRevision(progressKey(id)), "=", progRev),
		}
		parts := p.Partitions
		p.Partitions = nil // kept under their own key, not in every report
		ops := []clientv3.Op{clientv3.OpPut(progressKey(id), progressValue(p))}
		var table *PartitionTable
		if len(parts) > 0 {
			table = &PartitionTable{Attempt: p.Attempt, RecordedAt: now, Partitions: parts}
			ops = append(ops, clientv3.OpPut(partitionsKey(id), mustJSON(table)))
		}
		if t.Progress == nil || t.Progress.Stage != p.Stage || t.Progress.Attempt != p.Attempt {
			ops = append(ops, eventOp(id, Event{At: now, Kind: "stage", Stage: p.Stage, Message: p.Message}))
		}
		st := t.Status
		if cur != wire.StatusInstalling {
			st = StatusRecord{Status: wire.StatusInstalling, UpdatedAt: now, Attempt: t.Status.Attempt}
			ops = append(ops,
				clientv3.OpPut(statusKey(id), statusValue(st)),
				eventOp(id, Event{At: now.Add(-time.Nanosecond), Kind: "status", From: cur, To: wire.StatusInstalling, Message: "agent reported progress"}))
		}
		ops = s.boundEventsIn(id, packEvents(id, ops), resp.Kvs)
		tr, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return ProgressResult{}, fmt.Errorf("store progress of %s: %w", id, err)
		}
		if tr.Succeeded {
			t.Status = st
			t.Progress = &p
			if table != nil {
				t.Partitions = table
			}
			t.Revision = tr.Header.Revision
			return ProgressResult{Task: t}, nil
		}
	}
	return ProgressResult{}, fmt.Errorf("store progress of %s: %w: too much contention", id, ErrConflict)
}

// Fail moves a task to failed with the reason and the agent's last log lines.
func (s *Store) Fail(ctx context.Context, id, reason string, logLines []string) (Task, error) {
	if len(logLines) > 200 {
		logLines = logLines[len(logLines)-200:]
	}
	return s.transition(ctx, id, wire.StatusFailed, reason, func(Task) ([]clientv3.Op, []clientv3.Cmp, error) {
		if len(logLines) == 0 {
			return nil, nil, nil
		}
		at := time.Now().UTC().Add(time.Nanosecond)
		return []clientv3.Op{eventOp(id, Event{At: at, Kind: "error", Message: strings.Join(logLines, "\n")})}, nil, nil
	})
}
