package ui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/health"
	"github.com/lpmos/lpmos/store"
)

// Messages sent on /ws. The first message of every connection is a snapshot;
// the seed's shapes (progress, status, hardware) follow, plus task, event,
// machine and region messages. A "snapshot" arriving later replaces all state
// (the hub resynced after etcd compacted its history).
const (
	MsgSnapshot       = "snapshot"
	MsgTask           = "task" // a new task, complete with spec and status
	MsgTaskDeleted    = "task_deleted"
	MsgStatus         = "status"
	MsgHardware       = "hardware"
	MsgProgress       = "progress"
	MsgEvent          = "event"
	MsgMachine        = "machine"
	MsgMachineDeleted = "machine_deleted"
	MsgRegion         = "region"
	MsgRegionDeleted  = "region_deleted"
	MsgTargetDisk     = "target_disk" // the disk the install will erase (target_disk null: none chosen)
)

// Snapshot is the first message on /ws: the whole state at Revision.
type Snapshot struct {
	Type       string          `json:"type"`
	Revision   int64           `json:"revision"`
	ServerTime time.Time       `json:"server_time"`
	Tasks      []TaskSummary   `json:"tasks"` // summaries (ui/hub_summary.go); GET /api/v1/tasks/{id} has the rest
	Machines   []store.Machine `json:"machines"`
	Regions    []store.Region  `json:"regions"`
	// Resync is set on a snapshot that replaced messages the client was
	// too slow to take (or a reload after etcd compacted the watch).
	Resync bool `json:"resync,omitempty"`
}

// ProgressMessage is the seed's progress shape, plus bytes and seq.
type ProgressMessage struct {
	Type       string    `json:"type"`
	TaskID     string    `json:"task_id"`
	Revision   int64     `json:"revision"`
	Percentage int       `json:"percentage"`
	Stage      string    `json:"stage"`
	Message    string    `json:"message"`
	Seq        int64     `json:"seq"`
	BytesDone  int64     `json:"bytes_done,omitempty"`
	BytesTotal int64     `json:"bytes_total,omitempty"`
	Attempt    int       `json:"attempt,omitempty"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// StatusMessage is the seed's status shape.
type StatusMessage struct {
	Type      string      `json:"type"`
	TaskID    string      `json:"task_id"`
	Revision  int64       `json:"revision"`
	Status    wire.Status `json:"status"`
	Reason    string      `json:"reason,omitempty"`
	Attempt   int         `json:"attempt"`
	UpdatedAt time.Time   `json:"updated_at"`
}

// HardwareMessage is the seed's hardware shape, with the report's summary
// (hostname, DMI identity): the detail view reads the whole report from
// GET /api/v1/tasks/{id} when it changes.
type HardwareMessage struct {
	Type     string           `json:"type"`
	TaskID   string           `json:"task_id"`
	Revision int64            `json:"revision"`
	Hardware *HardwareSummary `json:"hardware"`
}

// TargetDiskMessage carries a task's chosen disk (nil when it was removed):
// name, size, description and who chose it, as in the summary.
type TargetDiskMessage struct {
	Type       string            `json:"type"`
	TaskID     string            `json:"task_id"`
	Revision   int64             `json:"revision"`
	TargetDisk *store.TargetDisk `json:"target_disk"`
}

// TaskMessage announces a new task (or a deleted one, without Task).
type TaskMessage struct {
	Type     string       `json:"type"`
	TaskID   string       `json:"task_id"`
	Revision int64        `json:"revision"`
	Task     *TaskSummary `json:"task,omitempty"`
}

// EventMessage carries one entry of a task's history.
type EventMessage struct {
	Type     string       `json:"type"`
	TaskID   string       `json:"task_id"`
	Revision int64        `json:"revision"`
	Event    *store.Event `json:"event"`
}

// MachineMessage carries a discovered machine (or its MAC when deleted).
type MachineMessage struct {
	Type     string         `json:"type"`
	Revision int64          `json:"revision"`
	MAC      string         `json:"mac"`
	Machine  *store.Machine `json:"machine,omitempty"`
}

// RegionMessage carries a region registration (or its id when it expired).
type RegionMessage struct {
	Type     string        `json:"type"`
	Revision int64         `json:"revision"`
	RegionID string        `json:"region_id"`
	Region   *store.Region `json:"region,omitempty"`
}

// HubConfig tunes a Hub; zero values pick the defaults.
type HubConfig struct {
	// A client is resynced from a snapshot when its backlog of messages
	// that do not coalesce (ui/hub_queue.go) is past QueueLen messages
	// (default 1024) and past QueueBytes bytes or a snapshot's size,
	// whichever is larger (default 1 MiB).
	QueueLen   int
	QueueBytes int
	Health     *health.Registry
	Logger     *slog.Logger
	Retry      time.Duration // wait before reloading after a store error (default 1s)
}

// Hub keeps the dashboard's view of etcd (task summaries, machines,
// regions) from ONE store.Watch and fans every change out to the
// subscribed clients, each message encoded once. A task's whole record
// (hardware, partitions, events) is not kept: clients read it from
// GET /api/v1/tasks/{id} when they show it (ui/hub_summary.go). Each client has its own queue (ui/hub_queue.go):
// a client slower than the event rate gets the latest progress of each
// task instead of every report, and one that still falls QueueLen
// messages behind is resynced from a snapshot; a slow browser never
// slows the others and is never dropped.
type Hub struct {
	st    *store.Store
	cfg   HubConfig
	log   *slog.Logger
	watch func(ctx context.Context, fromRev int64) <-chan store.Change // st.Watch; tests replace it

	mu       sync.Mutex
	ready    chan struct{} // closed once the first snapshot is loaded
	isReady  bool
	rev      int64
	tasks    map[string]*hubTask
	machines map[string]store.Machine
	regions  map[string]store.Region
	snap     []byte // encoded snapshot; nil when stale
	snapLen  int    // size of the largest snapshot encoded since the last load
	clients  map[*Subscription]struct{}
	dropped  int64
	resyncs  int64
	ws       wsPool    // writers of /ws connections (ui/ws_writer.go)
	frames   frameMemo // /ws frame of the message being fanned out (ui/ws_conn.go)
}

// hubTask is the hub's summary of a task: a store.Task holding only the
// fields compactTask keeps (indexedTask at a load) (ui/hub_summary.go).
type hubTask struct {
	store.Task
	complete bool // spec and status seen: announced to clients
}

// Subscription is one client's feed. Messages arrive on C; Done is closed
// when the hub drops the client (queue overflow) or the client unsubscribes.
type Subscription struct {
	C      <-chan []byte
	c      chan []byte
	done   chan struct{}
	closed bool // guarded by Hub.mu

	q      *outQueue
	filter SubFilter
	pumped chan struct{} // closed when pump returns
}

// Done is closed when the subscription ends.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// NewHub returns a hub for st; Run feeds it.
func NewHub(st *store.Store, cfg HubConfig) *Hub {
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 1024
	}
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Retry <= 0 {
		cfg.Retry = time.Second
	}
	return &Hub{
		st: st, cfg: cfg, log: cfg.Logger.With("service", "live-updates"), watch: st.Watch,
		ready:   make(chan struct{}),
		clients: map[*Subscription]struct{}{},
	}
}

func (h *Hub) setHealth(state string, err error) {
	if h.cfg.Health != nil {
		h.cfg.Health.Set("live-updates", state, err)
	}
}

// Run loads a snapshot, watches etcd from the snapshot's revision+1 and
// broadcasts every change until ctx ends. When the watch must restart
// (compaction, lost leader) it reloads and sends every client the new
// snapshot, so nothing is lost and nothing is applied twice.
func (h *Hub) Run(ctx context.Context) error {
	h.setHealth(health.Starting, nil)
	defer func() {
		h.setHealth(health.Stopped, nil)
		h.mu.Lock()
		for s := range h.clients {
			h.dropLocked(s)
		}
		h.mu.Unlock()
	}()
	for ctx.Err() == nil {
		err := h.runOnce(ctx)
		if ctx.Err() != nil {
			break
		}
		h.log.Warn("live updates: reloading from etcd", "error", err)
		h.setHealth(health.Degraded, err)
		select {
		case <-ctx.Done():
		case <-time.After(h.cfg.Retry):
		}
	}
	return nil
}

func (h *Hub) runOnce(ctx context.Context) error {
	rev, err := h.load(ctx)
	if err != nil {
		return err
	}
	h.setHealth(health.Running, nil)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for c := range h.watch(wctx, rev+1) {
		if c.Kind == store.KindWatchRestart {
			return errors.New("etcd watch restarted (history compacted or leader lost)")
		}
		h.apply(c)
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("etcd watch closed")
}

// load reads a fresh snapshot and, if clients are connected, sends it to
// each of them: their state is replaced, whatever they missed. The tasks
// come from the store's task index (store/taskindex.go: summaries kept by
// its own watch), not from a read of every key of every task.
func (h *Hub) load(ctx context.Context) (int64, error) {
	tasks, rev, err := h.st.TaskSummaries(ctx)
	if err != nil {
		return 0, fmt.Errorf("load tasks: %w", err)
	}
	// Machines and regions are read after the tasks' revision; the watch
	// from rev+1 may replay a few of their changes, which are idempotent
	// upserts and deletes.
	machines, err := h.st.ListMachines(ctx)
	if err != nil {
		return 0, fmt.Errorf("load machines: %w", err)
	}
	regions, err := h.st.ListRegions(ctx)
	if err != nil {
		return 0, fmt.Errorf("load regions: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rev = rev
	h.tasks = make(map[string]*hubTask, len(tasks))
	for _, t := range tasks {
		h.tasks[t.ID] = &hubTask{Task: indexedTask(t), complete: true}
	}
	h.machines = make(map[string]store.Machine, len(machines))
	for _, m := range machines {
		h.machines[m.MAC] = m
	}
	h.regions = make(map[string]store.Region, len(regions))
	for _, r := range regions {
		h.regions[r.ID] = r
	}
	h.snap, h.snapLen = nil, 0
	if !h.isReady {
		h.isReady = true
		close(h.ready)
	} else {
		for s := range h.clients {
			s.q.reset(h.snapshotForLocked(s, true))
		}
	}
	h.log.Info("live updates: snapshot loaded", "revision", rev, "tasks", len(tasks), "machines", len(machines), "regions", len(regions))
	return rev, nil
}

// apply folds one change into the hub's state and broadcasts its message.
func (h *Hub) apply(c store.Change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c.Revision > h.rev {
		h.rev = c.Revision
	}
	f := fan{task: c.TaskID}
	if t := h.tasks[c.TaskID]; t != nil {
		f.region, f.old = t.Spec.RegionID, t.Status.Status
	}
	f.st = f.old
	var msg any
	switch c.Kind {
	case store.KindTaskCreated:
		t := h.tasks[c.TaskID]
		if t == nil {
			t = &hubTask{Task: store.Task{ID: c.TaskID}}
			h.tasks[c.TaskID] = t
		}
		t.Spec = compactSpec(*c.Spec)
		if t.complete || t.Status.Status == "" {
			// Announced once the status (same transaction) arrives.
			h.snap = nil
			return
		}
		t.complete = true
		f.region, f.st = t.Spec.RegionID, t.Status.Status
		msg = TaskMessage{Type: MsgTask, TaskID: c.TaskID, Revision: c.Revision, Task: ptr(summaryOf(&t.Task))}
	case store.KindTaskDeleted:
		delete(h.tasks, c.TaskID)
		msg = TaskMessage{Type: MsgTaskDeleted, TaskID: c.TaskID, Revision: c.Revision}
	case store.KindStatus:
		t := h.tasks[c.TaskID]
		if t == nil {
			t = &hubTask{Task: store.Task{ID: c.TaskID}}
			h.tasks[c.TaskID] = t
		}
		t.Status = *c.Status
		t.Revision = c.Revision
		f.st, f.statusChange = c.Status.Status, true
		switch {
		case t.complete:
			msg = StatusMessage{Type: MsgStatus, TaskID: c.TaskID, Revision: c.Revision, Status: c.Status.Status,
				Reason: c.Status.Reason, Attempt: c.Status.Attempt, UpdatedAt: c.Status.UpdatedAt}
		case t.Spec.TargetMAC != "":
			t.complete = true
			f.region, f.statusChange = t.Spec.RegionID, false
			msg = TaskMessage{Type: MsgTask, TaskID: c.TaskID, Revision: c.Revision, Task: ptr(summaryOf(&t.Task))}
		default:
			h.snap = nil
			return
		}
	case store.KindHardware:
		t := h.tasks[c.TaskID]
		if t == nil {
			return
		}
		t.Hardware = compactHardware(c.Hardware)
		if !t.complete {
			h.snap = nil
			return
		}
		msg = HardwareMessage{Type: MsgHardware, TaskID: c.TaskID, Revision: c.Revision, Hardware: hardwareSummary(c.Hardware)}
		f.kind = coalesceHardware
	case store.KindBMC, store.KindPower:
		if msg = h.applyPowerLocked(c); msg == nil { // ui/power_hub.go
			return
		}
		f.kind = coalescePower
		if c.Kind == store.KindBMC {
			f.kind = coalesceBMC
		}
	case store.KindTargetDisk:
		t := h.tasks[c.TaskID]
		if t == nil {
			return
		}
		t.TargetDisk = compactTargetDisk(c.TargetDisk)
		if !t.complete {
			h.snap = nil
			return
		}
		msg = TargetDiskMessage{Type: MsgTargetDisk, TaskID: c.TaskID, Revision: c.Revision, TargetDisk: t.TargetDisk}
		f.kind = coalesceTargetDisk
	case store.KindProgress:
		t := h.tasks[c.TaskID]
		if t == nil {
			return
		}
		t.Progress = compactProgress(c.Progress)
		if !t.complete {
			h.snap = nil
			return
		}
		p := c.Progress
		f.kind = coalesceProgress
		msg = ProgressMessage{Type: MsgProgress, TaskID: c.TaskID, Revision: c.Revision, Percentage: p.Percentage,
			Stage: p.Stage, Message: p.Message, Seq: p.Seq, BytesDone: p.BytesDone, BytesTotal: p.BytesTotal,
			Attempt: p.Attempt, UpdatedAt: p.UpdatedAt}
	case store.KindEvent:
		// Events are not kept (the detail view reads them from the API);
		// they are only passed on.
		msg = EventMessage{Type: MsgEvent, TaskID: c.TaskID, Revision: c.Revision, Event: c.Event}
	case store.KindMachine:
		h.machines[c.Machine.MAC] = *c.Machine
		msg = MachineMessage{Type: MsgMachine, Revision: c.Revision, MAC: c.Machine.MAC, Machine: c.Machine}
	case store.KindMachineGone:
		mac := lastSegment(c.Key)
		delete(h.machines, mac)
		msg = MachineMessage{Type: MsgMachineDeleted, Revision: c.Revision, MAC: mac}
	case store.KindRegion:
		h.regions[c.Region.ID] = *c.Region
		msg = RegionMessage{Type: MsgRegion, Revision: c.Revision, RegionID: c.Region.ID, Region: c.Region}
	case store.KindRegionGone:
		id := lastSegment(c.Key)
		delete(h.regions, id)
		msg = RegionMessage{Type: MsgRegionDeleted, Revision: c.Revision, RegionID: id}
	default:
		return
	}
	h.snap = nil
	b, err := json.Marshal(msg)
	if err != nil {
		h.log.Error("live updates: encode message", "kind", c.Kind, "error", err)
		return
	}
	f.b = b
	h.fanLocked(f, c.Revision)
}

// fan is one encoded message and what the clients' filters need of it.
type fan struct {
	task, region string
	old, st      store.Status // the task's status before and after the change
	statusChange bool
	kind         uint8 // state kind that coalesces in a client's queue (0: none)
	b            []byte
}

// fanLocked queues f for every client whose view it concerns. A status
// change that brings a task into a filtered view sends the whole task
// (encoded once, for all such clients); one that takes it out sends the
// status message, so the client removes it.
func (h *Hub) fanLocked(f fan, rev int64) {
	var whole []byte
	for s := range h.clients {
		switch {
		case f.task == "" || s.filter.empty():
		case f.statusChange:
			inOld := s.filter.match(f.task, f.region, f.old)
			if s.filter.match(f.task, f.region, f.st) && !inOld {
				if whole == nil {
					t := h.tasks[f.task]
					whole, _ = json.Marshal(TaskMessage{Type: MsgTask, TaskID: f.task, Revision: rev, Task: ptr(summaryOf(&t.Task))})
				}
				h.sendLocked(s, f.task, whole, coalesceNone)
				continue
			}
			if !inOld {
				continue
			}
		case !s.filter.match(f.task, f.region, f.st):
			continue
		}
		h.sendLocked(s, f.task, f.b, f.kind)
	}
}

func ptr[T any](v T) *T { return &v }

func lastSegment(key string) string {
	return key[strings.LastIndexByte(key, '/')+1:]
}

func (h *Hub) dropLocked(s *Subscription) {
	if s.closed {
		return
	}
	s.closed = true
	delete(h.clients, s)
	close(s.done)
	s.q.wake() // a connection waiting on its queue notices the end
}

// snapshotLocked returns the encoded snapshot, encoding it if stale.
func (h *Hub) snapshotLocked() []byte {
	if h.snap != nil {
		return h.snap
	}
	b, err := json.Marshal(h.buildSnapshotLocked(nil))
	if err != nil { // our own types always marshal
		h.log.Error("live updates: encode snapshot", "error", err)
		return []byte(`{"type":"snapshot","tasks":[],"machines":[],"regions":[]}`)
	}
	h.snap = b
	h.snapLen = max(h.snapLen, len(b))
	return b
}

// buildSnapshotLocked is the hub's state with the tasks match selects
// (nil: all).
func (h *Hub) buildSnapshotLocked(match func(*hubTask) bool) Snapshot {
	snap := Snapshot{Type: MsgSnapshot, Revision: h.rev, ServerTime: time.Now().UTC(),
		Tasks:    make([]TaskSummary, 0, len(h.tasks)),
		Machines: make([]store.Machine, 0, len(h.machines)),
		Regions:  make([]store.Region, 0, len(h.regions)),
	}
	for _, t := range h.tasks {
		if t.complete && (match == nil || match(t)) {
			snap.Tasks = append(snap.Tasks, summaryOf(&t.Task))
		}
	}
	sort.Slice(snap.Tasks, func(i, j int) bool {
		a, b := snap.Tasks[i].Spec.CreatedAt, snap.Tasks[j].Spec.CreatedAt
		if a.Equal(b) {
			return snap.Tasks[i].ID < snap.Tasks[j].ID
		}
		return a.After(b)
	})
	for _, m := range h.machines {
		snap.Machines = append(snap.Machines, m)
	}
	sort.Slice(snap.Machines, func(i, j int) bool { return snap.Machines[i].LastSeen.After(snap.Machines[j].LastSeen) })
	for _, r := range h.regions {
		snap.Regions = append(snap.Regions, r)
	}
	sort.Slice(snap.Regions, func(i, j int) bool { return snap.Regions[i].ID < snap.Regions[j].ID })
	return snap
}

// Subscribe waits until the hub has its first snapshot, then returns a
// subscription whose first message is the current snapshot, followed by
// every later change in order: nothing between the two is lost.
func (h *Hub) Subscribe(ctx context.Context) (*Subscription, error) {
	return h.SubscribeFilter(ctx, SubFilter{})
}

// Unsubscribe ends s; safe to call more than once and after a drop.
func (h *Hub) Unsubscribe(s *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropLocked(s)
}

// StatusCounts counts the tasks of the live view by status.
func (h *Hub) StatusCounts() map[store.Status]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[store.Status]int)
	for _, t := range h.tasks {
		if t.complete {
			out[t.Status.Status]++
		}
	}
	return out
}

// HubStats counts the hub's clients.
type HubStats struct {
	Clients  int   `json:"clients"`
	Dropped  int64 `json:"dropped"`
	Resyncs  int64 `json:"resyncs"` // clients too far behind, sent a fresh snapshot
	Revision int64 `json:"revision"`
}

// Stats reports the connected clients, the clients dropped (none since
// per-client queues; kept for the metric), the clients resynced for being
// too slow since start, and the last revision seen.
func (h *Hub) Stats() HubStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return HubStats{Clients: len(h.clients), Dropped: h.dropped, Resyncs: h.resyncs, Revision: h.rev}
}
