package store

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/lpmos/lpmos/agent/disksel"
	"github.com/lpmos/lpmos/agent/wire"
)

// Compact values (issue 14: etcd bytes per install). Until a compaction
// etcd keeps every version of every key, so what is written often is
// written without what the key or another key already says:
//
//   - /tasks/{id}/progress leaves out task_id (the key's) and mac_address
//     (the spec's), and stamps updated_at to the millisecond;
//   - /tasks/{id}/events/{ns} leaves out "at" (the key's nanosecond stamp);
//   - /tasks/{id}/status stamps updated_at to the millisecond;
//   - /tasks/{id}/target-disk leaves out the description (made from the
//     disk).
//
// The decoders fill both back in, and read values written before (which
// hold them) unchanged.

// storedProgress is wire.Progress as stored: the same field names, the
// redundant ones empty and omitted.
type storedProgress struct {
	TaskID     string    `json:"task_id,omitempty"`
	Seq        int64     `json:"seq"`
	Stage      string    `json:"stage"`
	Percentage int       `json:"percentage"`
	Message    string    `json:"message,omitempty"`
	BytesDone  int64     `json:"bytes_done,omitempty"`
	BytesTotal int64     `json:"bytes_total,omitempty"`
	Attempt    int       `json:"attempt,omitempty"`
	Run        int       `json:"run,omitempty"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// progressValue is the stored form of p (its partitions are kept under
// their own key).
func progressValue(p wire.Progress) string {
	return mustJSON(storedProgress{
		Seq: p.Seq, Stage: p.Stage, Percentage: p.Percentage, Message: p.Message,
		BytesDone: p.BytesDone, BytesTotal: p.BytesTotal, Attempt: p.Attempt, Run: p.Run,
		UpdatedAt: p.UpdatedAt.Truncate(time.Millisecond),
	})
}

// decodeProgress reads a stored report of task id.
func decodeProgress(id string, val []byte) (wire.Progress, error) {
	var p wire.Progress
	if err := json.Unmarshal(val, &p); err != nil {
		return wire.Progress{}, err
	}
	if p.TaskID == "" {
		p.TaskID = id
	}
	return p, nil
}

// storedEvent is Event as stored under its time-stamped key.
type storedEvent struct {
	Kind    string `json:"kind"`
	From    Status `json:"from,omitempty"`
	To      Status `json:"to,omitempty"`
	Stage   string `json:"stage,omitempty"`
	Message string `json:"message,omitempty"`
	Dropped int64  `json:"dropped,omitempty"`
}

// eventValue is the stored form of ev, whose key is eventKey(id, ev.At).
func eventValue(ev Event) string {
	return mustJSON(storedEvent{Kind: ev.Kind, From: ev.From, To: ev.To, Stage: ev.Stage, Message: ev.Message, Dropped: ev.Dropped})
}

// decodeEvent reads the event stored under key.
func decodeEvent(key string, val []byte) (Event, error) {
	var ev Event
	if err := json.Unmarshal(val, &ev); err != nil {
		return Event{}, err
	}
	if ev.At.IsZero() {
		i := strings.LastIndexByte(key, '/')
		if ns, err := strconv.ParseInt(key[i+1:], 10, 64); err == nil {
			ev.At = time.Unix(0, ns).UTC()
		}
	}
	return ev, nil
}

// statusValue is the stored form of st: updated_at to the millisecond.
func statusValue(st StatusRecord) string {
	st.UpdatedAt = st.UpdatedAt.Truncate(time.Millisecond)
	return mustJSON(st)
}

// storedTargetDisk is TargetDisk without its description, which
// disksel.Describe makes again from the disk.
type storedTargetDisk struct {
	wire.Disk
	ChosenBy string `json:"chosen_by"`
}

func targetDiskValue(td TargetDisk) string {
	return mustJSON(storedTargetDisk{Disk: td.Disk, ChosenBy: td.ChosenBy})
}

func decodeTargetDisk(val []byte) (TargetDisk, error) {
	var td TargetDisk
	if err := json.Unmarshal(val, &td); err != nil {
		return TargetDisk{}, err
	}
	if td.Description == "" {
		td.Description = disksel.Describe(td.Disk)
	}
	return td, nil
}
