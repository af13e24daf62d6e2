package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/lpmos/lpmos/agent/wire"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Change is one typed change seen by Watch.
type Change struct {
	Revision int64
	Kind     ChangeKind
	TaskID   string         // task changes
	Spec     *Spec          // KindTaskCreated
	Status   *StatusRecord  // KindStatus
	Hardware *wire.Hardware // KindHardware
	Progress *wire.Progress // KindProgress
	Event    *Event         // KindEvent
	Machine  *Machine       // KindMachine
	Region   *Region        // KindRegion
	Key      string         // the etcd key, for deletions

	// KindTargetDisk; nil when the choice was removed (retry, or the task
	// failed because no disk matched).
	TargetDisk *TargetDisk

	// KindBMC (nil: removed), redacted; KindPower; KindPowerRequest.
	BMC          *BMCInfo
	Power        *PowerState
	PowerRequest *PowerRequest

	// Live marks a KindProgress report accepted by this process's
	// progress path and not stored yet (store/live.go); Revision is then
	// the last revision the watch delivered.
	Live bool

	// moreEvents are the events after Event that the same key holds (one
	// transaction's, store/compact.go eventsValue): Watch sends each as a
	// change of its own.
	moreEvents []Event
}

// ChangeKind names what changed.
type ChangeKind string

// The kinds of change Watch reports.
const (
	KindTaskCreated  ChangeKind = "task"
	KindStatus       ChangeKind = "status"
	KindHardware     ChangeKind = "hardware"
	KindProgress     ChangeKind = "progress"
	KindEvent        ChangeKind = "event"
	KindTaskDeleted  ChangeKind = "task_deleted"
	KindMachine      ChangeKind = "machine"
	KindMachineGone  ChangeKind = "machine_deleted"
	KindRegion       ChangeKind = "region"
	KindRegionGone   ChangeKind = "region_deleted"
	KindWatchRestart ChangeKind = "resync" // history was compacted: reload a snapshot
	KindTargetDisk   ChangeKind = "target_disk"
	KindBMC          ChangeKind = "bmc"           // a task's BMC set or removed
	KindPower        ChangeKind = "power"         // a task's polled power state
	KindPowerRequest ChangeKind = "power_request" // a power action queued for a region
	// KindImage: an image catalog entry was added, replaced or removed
	// (Key names it; nothing is decoded). Sent only to a WatchStored that
	// names it: the region's image check drops what it remembers of the
	// entry.
	KindImage ChangeKind = "image"
)

// Watch streams typed changes after revision fromRev (0: from now) until ctx
// ends. If etcd compacted the history past fromRev, one KindWatchRestart
// change is sent and the channel closes: the consumer reloads a snapshot and
// watches again. The channel also closes when ctx ends.
func (s *Store) Watch(ctx context.Context, fromRev int64) <-chan Change {
	return s.watch(ctx, fromRev, true, nil)
}

// WatchStored is Watch without the live progress reports of this
// process (store/live.go): only what etcd stores. For a consumer that
// does nothing with within-stage progress (the stall check reads the
// stored report, which is written at most every --progress-persist,
// capped at stall-after/4): at thousands of reports a second, each live
// report handed to every watcher is a wake-up of each.
//
// kinds, when given, are the only kinds of change sent (KindWatchRestart
// always is): the others are not decoded at all. A fleet's stage changes
// are a progress and an events record each; a consumer that counts
// statuses need not decode either.
func (s *Store) WatchStored(ctx context.Context, fromRev int64, kinds ...ChangeKind) <-chan Change {
	var want map[ChangeKind]bool
	if len(kinds) > 0 {
		want = make(map[ChangeKind]bool, len(kinds))
		for _, k := range kinds {
			want[k] = true
		}
	}
	return s.watch(ctx, fromRev, false, want)
}

func (s *Store) watch(ctx context.Context, fromRev int64, withLive bool, want map[ChangeKind]bool) <-chan Change {
	out := make(chan Change, 256)
	go func() {
		defer close(out)
		// The store's one etcd watch (store/sharedwatch.go): its events
		// are decoded once for every watcher and shared read-only.
		cur := s.watches.subscribe(ctx, s, fromRev)
		defer cur.close()
		var live <-chan Change // nil: never ready
		if withLive {
			var unsubscribe func()
			live, unsubscribe = s.live.subscribe()
			defer unsubscribe()
		}
		var (
			lastRev int64
			order   = liveOrder{}
			stored  = map[string][2]int64{} // task -> attempt, seq of the last stored report sent
		)
		send := func(c Change) bool {
			select {
			case out <- c:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for {
			es, lc, err := cur.next(ctx, live)
			if err != nil {
				if ctx.Err() == nil {
					var end *watchEnd
					var compacted int64
					if errors.As(err, &end) {
						compacted = end.compactRev
					}
					s.log.Warn("store: watch ended, consumer must resync", "error", err, "compact_revision", compacted)
					send(Change{Kind: KindWatchRestart, Revision: compacted})
				}
				return
			}
			if lc != nil {
				c := *lc
				if !liveAhead(stored, c.TaskID, c.Progress) {
					continue
				}
				c.Revision = lastRev
				order.sent(c.TaskID, c.Progress)
				if !send(c) {
					return
				}
				continue
			}
			for _, e := range es {
				if e.ev == nil {
					continue // a progress notification
				}
				lastRev = max(lastRev, e.rev)
				if want != nil && (!e.kindOK || !want[e.kind]) || want == nil && e.kind == KindImage {
					continue
				}
				c, ok := e.change(s)
				if !ok {
					continue
				}
				switch c.Kind {
				case KindProgress:
					if !order.keep(c.TaskID, c.Progress) {
						continue
					}
					stored[c.TaskID] = [2]int64{int64(c.Progress.Attempt), c.Progress.Seq}
				case KindTaskDeleted:
					delete(stored, c.TaskID)
					delete(order, c.TaskID)
				}
				more := c.moreEvents
				c.moreEvents = nil
				if !send(c) {
					return
				}
				for i := range more {
					c.Event = &more[i]
					if !send(c) {
						return
					}
				}
			}
		}
	}()
	return out
}

// changeKindOf is the kind of change decodeChange makes of a change of
// key (del: a deletion), without decoding its value; ok false: none.
func changeKindOf(key string, del bool) (ChangeKind, bool) {
	switch {
	case strings.HasPrefix(key, prefixTasks):
		_, kind, ok := taskKeyKind(key)
		if !ok {
			return "", false
		}
		switch {
		case kind == "spec" && del:
			return KindTaskDeleted, true
		case kind == "spec":
			return KindTaskCreated, true
		case kind == "bmc":
			return KindBMC, true
		case kind == "power" && !del:
			return KindPower, true
		case kind == "target-disk":
			return KindTargetDisk, true
		case del:
			return "", false
		case kind == "status":
			return KindStatus, true
		case kind == "hardware":
			return KindHardware, true
		case kind == "progress":
			return KindProgress, true
		case kind == "events":
			return KindEvent, true
		}
		return "", false
	case strings.HasPrefix(key, prefixPowerRequests):
		return KindPowerRequest, !del
	case strings.HasPrefix(key, prefixImages):
		return KindImage, true
	case strings.HasPrefix(key, prefixMachines):
		if del {
			return KindMachineGone, true
		}
		return KindMachine, true
	case strings.HasPrefix(key, prefixRegions):
		if del {
			return KindRegionGone, true
		}
		return KindRegion, true
	}
	return "", false
}

func (s *Store) decodeChange(ev *clientv3.Event) (Change, bool) {
	key := string(ev.Kv.Key)
	c := Change{Revision: ev.Kv.ModRevision, Key: key}
	del := ev.Type == clientv3.EventTypeDelete
	if del {
		c.Revision = ev.Kv.ModRevision
	}
	var err error
	switch {
	case strings.HasPrefix(key, prefixTasks):
		id, kind, ok := taskKeyKind(key)
		if !ok {
			return c, false
		}
		c.TaskID = id
		switch {
		case kind == "spec" && del:
			c.Kind = KindTaskDeleted
		case kind == "spec":
			if ev.IsModify() {
				return c, false
			}
			c.Kind, c.Spec = KindTaskCreated, new(Spec)
			err = json.Unmarshal(ev.Kv.Value, c.Spec)
		case kind == "bmc":
			c.Kind = KindBMC
			if !del {
				c.BMC, err = decodeBMCInfo(ev.Kv.Value)
			}
		case kind == "power" && !del:
			c.Kind, c.Power = KindPower, new(PowerState)
			err = json.Unmarshal(ev.Kv.Value, c.Power)
		case kind == "target-disk":
			c.Kind = KindTargetDisk
			if !del {
				var td TargetDisk
				td, err = decodeTargetDisk(ev.Kv.Value)
				c.TargetDisk = &td
			}
		case del:
			return c, false
		case kind == "status":
			c.Kind, c.Status = KindStatus, new(StatusRecord)
			err = json.Unmarshal(ev.Kv.Value, c.Status)
		case kind == "hardware":
			c.Kind, c.Hardware = KindHardware, new(wire.Hardware)
			err = json.Unmarshal(ev.Kv.Value, c.Hardware)
		case kind == "progress":
			var p wire.Progress
			p, err = decodeProgress(id, ev.Kv.Value)
			c.Kind, c.Progress = KindProgress, &p
		case kind == "events" && isFolded(ev.Kv.Value):
			return c, false // events already sent, now under one key (store/fold.go)
		case kind == "events":
			var evs []Event
			if evs, err = decodeEvents(key, ev.Kv.Value); err == nil && len(evs) > 0 {
				c.Kind, c.Event, c.moreEvents = KindEvent, &evs[0], evs[1:]
			} else if err == nil {
				return c, false
			}
		default:
			return c, false
		}
	case strings.HasPrefix(key, prefixPowerRequests):
		if del {
			return c, false
		}
		c.Kind, c.PowerRequest = KindPowerRequest, new(PowerRequest)
		err = json.Unmarshal(ev.Kv.Value, c.PowerRequest)
		c.PowerRequest.Key = key
	case strings.HasPrefix(key, prefixImages):
		c.Kind = KindImage
	case strings.HasPrefix(key, prefixMachines):
		if del {
			c.Kind = KindMachineGone
			break
		}
		c.Kind, c.Machine = KindMachine, new(Machine)
		err = json.Unmarshal(ev.Kv.Value, c.Machine)
	case strings.HasPrefix(key, prefixRegions):
		if del {
			c.Kind = KindRegionGone
			break
		}
		c.Kind, c.Region = KindRegion, new(Region)
		err = json.Unmarshal(ev.Kv.Value, c.Region)
	default:
		return c, false
	}
	if err != nil {
		s.log.Warn("store: undecodable watched value", "key", key, "error", fmt.Errorf("decode: %w", err))
		return c, false
	}
	return c, true
}
