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
//     (the spec's), names its fields with one or two letters and stamps
//     updated_at in unix milliseconds;
//   - /tasks/{id}/events/{stamp} leaves out "at" (the key's nanosecond
//     stamp, an 11-character sortable encoding since events14: keys.go),
//     names its fields with one letter and leaves out the kind where the
//     fields say it (a status change has "to", a stage a stage);
//   - /tasks/{id}/status names its fields with one letter and stamps
//     updated_at in unix milliseconds;
//   - /tasks/{id}/target-disk leaves out the description (made from the
//     disk).
//
// The decoders fill all of it back in, and read values (and event keys)
// written before unchanged.

// storedProgress is wire.Progress as stored (since events14; before, its
// own field names, with task_id and mac_address before store14): one- or
// two-letter names, updated_at in unix milliseconds.
type storedProgress struct {
	Seq        int64  `json:"q"`
	Stage      string `json:"s"`
	Percentage int    `json:"p"`
	Message    string `json:"m,omitempty"`
	BytesDone  int64  `json:"bd,omitempty"`
	BytesTotal int64  `json:"bt,omitempty"`
	Attempt    int    `json:"a,omitempty"`
	Run        int    `json:"r,omitempty"`
	UpdatedAt  int64  `json:"u,omitempty"`
}

// progressValue is the stored form of p (its partitions are kept under
// their own key).
func progressValue(p wire.Progress) string {
	sp := storedProgress{
		Seq: p.Seq, Stage: p.Stage, Percentage: p.Percentage, Message: p.Message,
		BytesDone: p.BytesDone, BytesTotal: p.BytesTotal, Attempt: p.Attempt, Run: p.Run,
	}
	if !p.UpdatedAt.IsZero() {
		sp.UpdatedAt = p.UpdatedAt.UnixMilli()
	}
	return mustJSON(sp)
}

// decodeProgress reads a stored report of task id, in either layout.
func decodeProgress(id string, val []byte) (wire.Progress, error) {
	var a struct {
		wire.Progress
		Q  *int64 `json:"q"`
		S  string `json:"s"`
		P  int    `json:"p"`
		M  string `json:"m"`
		BD int64  `json:"bd"`
		BT int64  `json:"bt"`
		A  int    `json:"a"`
		R  int    `json:"r"`
		U  int64  `json:"u"`
	}
	if err := json.Unmarshal(val, &a); err != nil {
		return wire.Progress{}, err
	}
	p := a.Progress
	if a.Q != nil {
		p = wire.Progress{Seq: *a.Q, Stage: a.S, Percentage: a.P, Message: a.M, BytesDone: a.BD, BytesTotal: a.BT, Attempt: a.A, Run: a.R}
		if a.U != 0 {
			p.UpdatedAt = time.UnixMilli(a.U).UTC()
		}
	}
	if p.TaskID == "" {
		p.TaskID = id
	}
	return p, nil
}

// storedEvent is Event as stored under its time-stamped key (since
// events14; before, the field names of Event, and "at" before store14).
type storedEvent struct {
	Kind    string `json:"k,omitempty"` // left out when impliedKind says it
	From    Status `json:"f,omitempty"`
	To      Status `json:"t,omitempty"`
	Stage   string `json:"s,omitempty"`
	Message string `json:"m,omitempty"`
	Dropped int64  `json:"d,omitempty"`
}

// impliedKind is the kind a stored event without one has: a status
// change names the status it went to, a stage event only its stage.
func impliedKind(from, to Status, stage string) string {
	switch {
	case to != "" && stage == "":
		return "status"
	case stage != "" && from == "" && to == "":
		return "stage"
	}
	return ""
}

// eventValue is the stored form of ev, whose key is eventKey(id, ev.At).
func eventValue(ev Event) string {
	se := storedEvent{Kind: ev.Kind, From: ev.From, To: ev.To, Stage: ev.Stage, Message: ev.Message, Dropped: ev.Dropped}
	if ev.Kind != "" && ev.Kind == impliedKind(ev.From, ev.To, ev.Stage) {
		se.Kind = ""
	}
	return mustJSON(se)
}

// eventsValue is the stored form of one transaction's events evs (at
// least one, in the order the transaction wrote them) under
// eventKey(id, firstAt(evs)): one event as eventValue, several as a list
// whose members say their time as "o", nanoseconds after the key's (left
// out when 0). The list keeps the transaction's order (the order watchers
// saw them in when each had its own key); Events sorts by time.
func eventsValue(evs []Event) string {
	if len(evs) == 1 {
		return eventValue(evs[0])
	}
	return eventsList("[", evs, firstAt(evs))
}

// foldedMark opens a folded value: a list whose first member is 0.
const foldedMark = "[0"

// foldedValue is the stored form of a task's events evs (at least one)
// folded from several keys into one (store/fold.go) under
// eventKey(id, firstAt(evs)): eventsValue's list after a first member 0,
// which says the events are not new (the watch sends nothing for it) and
// are in the order Events returns them (it does not sort them again).
func foldedValue(evs []Event) string {
	return eventsList(foldedMark+",", evs, firstAt(evs))
}

// isFolded says whether an event value is foldedValue's.
func isFolded(val []byte) bool {
	return len(val) > 2 && string(val[:2]) == foldedMark && (val[2] == ',' || val[2] == ']')
}

// eventsList writes evs as a list opened by open, each member's time as
// "o", nanoseconds after base (left out when 0).
func eventsList(open string, evs []Event, base time.Time) string {
	var b strings.Builder
	b.WriteString(open)
	for i, ev := range evs {
		if i > 0 {
			b.WriteByte(',')
		}
		v := eventValue(ev)
		if off := ev.At.Sub(base).Nanoseconds(); off != 0 {
			v = v[:len(v)-1] + `,"o":` + strconv.FormatInt(off, 10) + "}"
			if v[1] == ',' { // eventValue was {}
				v = "{" + v[2:]
			}
		}
		b.WriteString(v)
	}
	b.WriteByte(']')
	return b.String()
}

// firstAt is the oldest time of evs.
func firstAt(evs []Event) time.Time {
	at := evs[0].At
	for _, ev := range evs[1:] {
		if ev.At.Before(at) {
			at = ev.At
		}
	}
	return at
}

// decodeEvents reads the events stored under key: one, or a list
// (eventsValue, foldedValue) in the order it was written.
func decodeEvents(key string, val []byte) ([]Event, error) {
	if len(val) == 0 || val[0] != '[' {
		ev, err := decodeEvent(key, val)
		if err != nil {
			return nil, err
		}
		return []Event{ev}, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(val, &list); err != nil {
		return nil, err
	}
	if isFolded(val) {
		list = list[1:]
	}
	out := make([]Event, 0, len(list))
	for _, raw := range list {
		ev, err := decodeEvent(key, raw)
		if err != nil {
			return nil, err
		}
		var o struct {
			O int64 `json:"o"`
		}
		if err := json.Unmarshal(raw, &o); err != nil {
			return nil, err
		}
		ev.At = ev.At.Add(time.Duration(o.O))
		out = append(out, ev)
	}
	return out, nil
}

// eventCount is how many events a stored event value holds.
func eventCount(val []byte) int {
	if len(val) == 0 || val[0] != '[' {
		return 1
	}
	var list []json.RawMessage
	if json.Unmarshal(val, &list) != nil || len(list) == 0 {
		return 1
	}
	if isFolded(val) {
		return max(1, len(list)-1)
	}
	return len(list)
}

// anyEvent reads every layout an event value has had: Event's own field
// names (with "at" before store14) and storedEvent's.
type anyEvent struct {
	At      time.Time `json:"at"`
	Kind    string    `json:"kind"`
	From    Status    `json:"from"`
	To      Status    `json:"to"`
	Stage   string    `json:"stage"`
	Message string    `json:"message"`
	Dropped int64     `json:"dropped"`

	K string `json:"k"`
	F Status `json:"f"`
	T Status `json:"t"`
	S string `json:"s"`
	M string `json:"m"`
	D int64  `json:"d"`
}

// decodeEvent reads the event stored under key.
func decodeEvent(key string, val []byte) (Event, error) {
	var a anyEvent
	if err := json.Unmarshal(val, &a); err != nil {
		return Event{}, err
	}
	ev := Event{At: a.At, Kind: a.Kind, From: a.From, To: a.To, Stage: a.Stage, Message: a.Message, Dropped: a.Dropped}
	if a.K != "" || a.F != "" || a.T != "" || a.S != "" || a.M != "" || a.D != 0 {
		ev.Kind, ev.From, ev.To, ev.Stage, ev.Message, ev.Dropped = a.K, a.F, a.T, a.S, a.M, a.D
	}
	if ev.Kind == "" {
		ev.Kind = impliedKind(ev.From, ev.To, ev.Stage)
	}
	if ev.At.IsZero() {
		if ns, ok := parseEventStamp(key[strings.LastIndexByte(key, '/')+1:]); ok {
			ev.At = time.Unix(0, ns).UTC()
		}
	}
	return ev, nil
}

// storedStatus is StatusRecord as stored (since events14).
type storedStatus struct {
	Status    Status `json:"s"`
	Reason    string `json:"r,omitempty"`
	UpdatedAt int64  `json:"u,omitempty"` // unix milliseconds
	Attempt   int    `json:"a"`
}

// statusValue is the stored form of st: short names, updated_at in unix
// milliseconds.
func statusValue(st StatusRecord) string {
	ss := storedStatus{Status: st.Status, Reason: st.Reason, Attempt: st.Attempt}
	if !st.UpdatedAt.IsZero() {
		ss.UpdatedAt = st.UpdatedAt.UnixMilli()
	}
	return mustJSON(ss)
}

// UnmarshalJSON reads a status in either layout: the API's (StatusRecord's
// field names, also what etcd held before events14) or the stored one
// (statusValue). Every reader of /tasks/{id}/status decodes through it.
func (st *StatusRecord) UnmarshalJSON(b []byte) error {
	var a struct {
		Status    Status    `json:"status"`
		Reason    string    `json:"reason"`
		UpdatedAt time.Time `json:"updated_at"`
		Attempt   int       `json:"attempt"`

		S Status `json:"s"`
		R string `json:"r"`
		U int64  `json:"u"`
		A int    `json:"a"`
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	if a.S == "" {
		*st = StatusRecord{Status: a.Status, Reason: a.Reason, UpdatedAt: a.UpdatedAt, Attempt: a.Attempt}
		return nil
	}
	*st = StatusRecord{Status: a.S, Reason: a.R, Attempt: a.A}
	if a.U != 0 {
		st.UpdatedAt = time.UnixMilli(a.U).UTC()
	}
	return nil
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
