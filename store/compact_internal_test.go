package store

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/disksel"
	"github.com/lpmos/lpmos/agent/wire"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestCompactValues: the stored progress and event leave out what their
// key (or the spec) says, and decode back to the same values; values in
// the older, full form still decode.
func TestCompactValues(t *testing.T) {
	t.Parallel()
	id := "0a30e94b-aab0-45c0-849f-77fda0a3bf7d"
	at := time.Date(2026, 12, 1, 21, 8, 33, 505838390, time.UTC)
	p := wire.Progress{MACAddress: "52:54:00:00:00:01", TaskID: id, Seq: 7, Stage: wire.StageDownloading, Percentage: 41,
		Message: "downloading", BytesDone: 10, BytesTotal: 20, Attempt: 2, Run: 1, UpdatedAt: at}
	v := progressValue(p)
	for _, redundant := range []string{id, "52:54:00:00:00:01", "mac_address", "task_id", "percentage", "updated_at", "2026-12-01"} {
		if strings.Contains(v, redundant) {
			t.Errorf("stored progress %s holds %q", v, redundant)
		}
	}
	got, err := decodeProgress(id, []byte(v))
	if err != nil {
		t.Fatal(err)
	}
	want := p
	want.MACAddress, want.UpdatedAt = "", at.Truncate(time.Millisecond)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %+v, want %+v", got, want)
	}
	if v != `{"q":7,"s":"downloading","p":41,"m":"downloading","bd":10,"bt":20,"a":2,"r":1,"u":1796159313505}` {
		t.Errorf("stored progress: %s", v)
	}
	old := mustJSON(p) // the full form written before store14
	if got, err := decodeProgress(id, []byte(old)); err != nil || !reflect.DeepEqual(got, p) {
		t.Errorf("old form %s decoded to %+v, %v", old, got, err)
	}
	// store14's form: no task_id, no mac_address.
	p14 := `{"seq":7,"stage":"downloading","percentage":41,"message":"downloading","bytes_done":10,"bytes_total":20,"attempt":2,"run":1,"updated_at":"2026-12-01T21:08:33.505Z"}`
	if got, err := decodeProgress(id, []byte(p14)); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("store14 form %s decoded to %+v, %v; want %+v", p14, got, err, want)
	}
	// A first report at seq 0 and percentage 0 keeps its layout.
	p0 := wire.Progress{TaskID: id, Stage: wire.StagePartitioning}
	if got, err := decodeProgress(id, []byte(progressValue(p0))); err != nil || !reflect.DeepEqual(got, p0) {
		t.Errorf("zero report %s decoded to %+v, %v", progressValue(p0), got, err)
	}

	ev := Event{At: at, Kind: "status", From: wire.StatusApproved, To: wire.StatusInstalling, Message: "agent reported progress"}
	key := eventKey(id, ev.At)
	ev2, err := decodeEvent(key, []byte(eventValue(ev)))
	if err != nil || ev2 != ev {
		t.Errorf("event decoded to %+v, %v; want %+v", ev2, err, ev)
	}
	if strings.Contains(eventValue(ev), `"at"`) {
		t.Errorf("stored event %s holds its time", eventValue(ev))
	}
	// A value that carries its own time (the dropped-events record, older
	// events) keeps it.
	rec := Event{At: at, Kind: EventKindDropped, Dropped: 3}
	if got, err := decodeEvent(droppedKey(id), []byte(mustJSON(rec))); err != nil || !got.At.Equal(at) || got.Dropped != 3 {
		t.Errorf("dropped record decoded to %+v, %v", got, err)
	}

	td := TargetDisk{Disk: wire.Disk{Name: "nvme0n1", SizeBytes: 3840755982336, Model: "SAMSUNG MZQL23T8HCLS-00A07", Serial: "S64"}, ChosenBy: ChosenByDefault}
	td.Description = disksel.Describe(td.Disk)
	if v := targetDiskValue(td); strings.Contains(v, "description") {
		t.Errorf("stored target disk %s holds its description", v)
	}
	if got, err := decodeTargetDisk([]byte(targetDiskValue(td))); err != nil || got != td {
		t.Errorf("target disk decoded to %+v, %v; want %+v", got, err, td)
	}
	st := StatusRecord{Status: wire.StatusInstalling, UpdatedAt: at, Attempt: 1}
	if v := statusValue(st); !strings.Contains(v, `"u":1796159313505`) {
		t.Errorf("stored status %s: want updated_at in unix milliseconds", v)
	}
}

// TestEventLayout: the events14 layout of an event (11-character stamp,
// one-letter names, the kind left out where the fields say it) decodes
// to the same event, and so do the keys and values written before it.
func TestEventLayout(t *testing.T) {
	id := "0a30e94b-aab0-45c0-849f-77fda0a3bf7d"
	at := time.Date(2026, 12, 1, 21, 8, 33, 505838390, time.UTC)
	events := []Event{
		{At: at, Kind: "status", To: wire.StatusPending, Message: "task created"},
		{At: at, Kind: "status", From: wire.StatusApproved, To: wire.StatusInstalling, Message: "agent reported progress"},
		{At: at, Kind: "stage", Stage: wire.StageDownloading, Message: "downloading"},
		{At: at, Kind: "stage", Stage: wire.StageCompleted},
		{At: at, Kind: "auth", Message: "agent session opened"},
		{At: at, Kind: "disk", Message: "target disk: /dev/sda"},
		{At: at, Kind: "error", Message: "line 1\nline 2"},
		{At: at, Kind: EventKindPower, Message: "power on"},
		{At: at, Kind: "note", To: wire.StatusFailed, Stage: "x"}, // no kind implied: kept
		{At: at, Kind: "status", From: wire.StatusInstalling, To: wire.StatusFailed, Stage: "writing"},
	}
	for _, ev := range events {
		key, val := eventKey(id, ev.At), eventValue(ev)
		if got, err := decodeEvent(key, []byte(val)); err != nil || got != ev {
			t.Errorf("%s %s decoded to %+v, %v; want %+v", key, val, got, err, ev)
		}
		for _, long := range []string{`"at"`, `"kind"`, `"message"`, `"from"`, `"stage"`} {
			if strings.Contains(val, long) {
				t.Errorf("stored event %s holds %s", val, long)
			}
		}
		// What store14 wrote (Event's names, no "at", decimal stamp)
		// and what came before it (with "at").
		oldKey := fmt.Sprintf("%s%020d", eventsPrefix(id), ev.At.UnixNano())
		noAt := strings.Replace(mustJSON(ev), `"at":"2026-12-01T21:08:33.50583839Z",`, "", 1)
		for _, old := range []string{noAt, mustJSON(ev)} {
			if got, err := decodeEvent(oldKey, []byte(old)); err != nil || got != ev {
				t.Errorf("old %s %s decoded to %+v, %v; want %+v", oldKey, old, got, err, ev)
			}
		}
	}
	if v := eventValue(events[1]); v != `{"f":"approved","t":"installing","m":"agent reported progress"}` {
		t.Errorf("stored status event: %s", v)
	}
	if k := eventKey(id, at); len(k) != len(eventsPrefix(id))+11 {
		t.Errorf("event key %s: want an 11-character stamp", k)
	}
}

// TestEventStampOrder: the byte order of stamps is time order, new
// stamps sort after every decimal stamp of the layout before (a task's
// older events stay first) and the dropped-events record before all.
func TestEventStampOrder(t *testing.T) {
	id := "0a30e94b-aab0-45c0-849f-77fda0a3bf7d"
	r := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	var ns []int64
	for range 2000 {
		ns = append(ns, base+r.Int64N(int64(50*365*24*time.Hour)))
	}
	ns = append(ns, 1, 63, 64, 1<<59, 1<<60-1, 1<<60, 1<<62, 1<<63-1, base, base+1, base-1)
	for _, n := range ns {
		s := eventStamp(n)
		if got, ok := parseEventStamp(s); !ok || got != n {
			t.Fatalf("stamp %s of %d parsed to %d, %v", s, n, got, ok)
		}
	}
	slices.Sort(ns)
	for i := 1; i < len(ns); i++ {
		a, b := eventKey(id, time.Unix(0, ns[i-1])), eventKey(id, time.Unix(0, ns[i]))
		if ns[i-1] < ns[i] && a >= b {
			t.Fatalf("key of %d (%s) does not sort before that of %d (%s)", ns[i-1], a, ns[i], b)
		}
	}
	oldest, newest := fmt.Sprintf("%s%020d", eventsPrefix(id), 1), fmt.Sprintf("%s%020d", eventsPrefix(id), int64(1<<63-1))
	if first := eventKey(id, time.Unix(0, 1)); first <= newest || droppedKey(id) >= oldest {
		t.Errorf("order: dropped %s, decimal %s..%s, new %s", droppedKey(id), oldest, newest, first)
	}
	if ns, ok := parseEventStamp("00000000000000000000"); !ok || ns != 0 {
		t.Errorf("dropped record's stamp parsed to %d, %v", ns, ok)
	}
	for _, bad := range []string{"a!!!!!!!!!!", "q0000000000", "", "12x"} {
		if _, ok := parseEventStamp(bad); ok {
			t.Errorf("stamp %q parsed", bad)
		}
	}
}

// TestStatusLayout: the stored status decodes (through StatusRecord's
// UnmarshalJSON, which every reader uses) to the record to the
// millisecond, and the API's layout (also etcd's before events14) still
// decodes; the API's JSON is unchanged.
func TestStatusLayout(t *testing.T) {
	at := time.Date(2026, 12, 1, 21, 8, 33, 505838390, time.UTC)
	for _, st := range []StatusRecord{
		{Status: wire.StatusInstalling, UpdatedAt: at, Attempt: 1},
		{Status: wire.StatusFailed, Reason: "disk gone", UpdatedAt: at, Attempt: 3},
		{Status: wire.StatusPending, Attempt: 1},
	} {
		v := statusValue(st)
		var got StatusRecord
		if err := json.Unmarshal([]byte(v), &got); err != nil {
			t.Fatal(err)
		}
		want := st
		want.UpdatedAt = st.UpdatedAt.Truncate(time.Millisecond)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s decoded to %+v, want %+v", v, got, want)
		}
		api, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(api), `"status":`) || !strings.Contains(string(api), `"updated_at":`) {
			t.Errorf("API JSON of a status changed: %s", api)
		}
		got = StatusRecord{}
		if err := json.Unmarshal(api, &got); err != nil || !reflect.DeepEqual(got, st) {
			t.Errorf("old layout %s decoded to %+v, %v; want %+v", api, got, err, st)
		}
	}
	if v := statusValue(StatusRecord{Status: wire.StatusReady, Reason: "claimed by region", UpdatedAt: at, Attempt: 1}); v != `{"s":"ready","r":"claimed by region","u":1796159313505,"a":1}` {
		t.Errorf("stored status: %s", v)
	}
}

// TestEventList: one transaction's events under one key keep the
// transaction's order and each its own time; a single event is stored as
// before; packEvents folds only the event puts of the task.
func TestEventList(t *testing.T) {
	id := "0a30e94b-aab0-45c0-849f-77fda0a3bf7d"
	at := time.Date(2026, 12, 1, 21, 8, 33, 505838390, time.UTC)
	evs := []Event{ // as reportProgress writes them: the stage, then the status change a nanosecond before
		{At: at, Kind: "stage", Stage: wire.StagePartitioning, Message: "partitioning"},
		{At: at.Add(-time.Nanosecond), Kind: "status", From: wire.StatusApproved, To: wire.StatusInstalling, Message: "agent reported progress"},
		{At: at.Add(5 * time.Millisecond), Kind: "note"},
		{At: at.Add(time.Second), Kind: ""},
	}
	v := eventsValue(evs)
	want := `[{"s":"partitioning","m":"partitioning","o":1},{"f":"approved","t":"installing","m":"agent reported progress"},{"k":"note","o":5000001},{"o":1000000001}]`
	if v != want {
		t.Errorf("stored list %s, want %s", v, want)
	}
	key := eventKey(id, at.Add(-time.Nanosecond))
	got, err := decodeEvents(key, []byte(v))
	if err != nil || !reflect.DeepEqual(got, evs) {
		t.Errorf("list decoded to %+v, %v; want %+v", got, err, evs)
	}
	if n := eventCount([]byte(v)); n != 4 {
		t.Errorf("eventCount %d, want 4", n)
	}
	if v := eventsValue(evs[:1]); v != eventValue(evs[0]) {
		t.Errorf("one event stored as %s", v)
	}
	if got, err := decodeEvents(eventKey(id, at), []byte(eventValue(evs[0]))); err != nil || len(got) != 1 || got[0] != evs[0] || eventCount([]byte(eventValue(evs[0]))) != 1 {
		t.Errorf("one event decoded to %+v, %v", got, err)
	}

	other := "1b30e94b-aab0-45c0-849f-77fda0a3bf7d"
	ops := []clientv3.Op{
		clientv3.OpPut(progressKey(id), "p"),
		eventOp(id, evs[0]),
		clientv3.OpPut(statusKey(id), "s"),
		eventOp(id, evs[1]),
		eventOp(other, evs[2]),
		clientv3.OpDelete(eventKey(id, at.Add(-time.Hour))),
	}
	packed := packEvents(id, ops)
	if len(packed) != 5 {
		t.Fatalf("%d ops after packing, want 5", len(packed))
	}
	p := packed[1]
	if !p.IsPut() || string(p.KeyBytes()) != key || string(p.ValueBytes()) != eventsValue(evs[:2]) {
		t.Errorf("packed op %s = %s, want %s = %s", p.KeyBytes(), p.ValueBytes(), key, eventsValue(evs[:2]))
	}
	for i, want := range []string{progressKey(id), key, statusKey(id), eventKey(other, evs[2].At), eventKey(id, at.Add(-time.Hour))} {
		if string(packed[i].KeyBytes()) != want {
			t.Errorf("op %d is %s, want %s", i, packed[i].KeyBytes(), want)
		}
	}
	if one := ops[:3]; len(packEvents(id, one)) != 3 {
		t.Errorf("one event: ops changed")
	}
}

// A folded value (store/fold.go) holds events in the order given, each at
// its own nanosecond, decodes back to them, counts them (not its mark),
// and is told from eventsValue's list.
func TestFoldedValue(t *testing.T) {
	t.Parallel()
	id := "0a30e94b-aab0-45c0-849f-77fda0a3bf7d"
	at := time.Date(2026, 12, 2, 13, 0, 0, 123456789, time.UTC)
	evs := []Event{
		{At: at, Kind: "status", To: wire.StatusPending, Message: "task created"},
		{At: at.Add(2 * time.Second), Kind: "stage", Stage: wire.StagePartitioning},
		{At: at.Add(time.Second), Kind: "status", From: wire.StatusInstalling, To: wire.StatusFailed}, // out of time order: kept
		{At: at.Add(3 * time.Second), Kind: "custom"},
	}
	v := foldedValue(evs)
	if !isFolded([]byte(v)) || isFolded([]byte(eventsValue(evs))) || isFolded([]byte(eventValue(evs[0]))) {
		t.Fatalf("isFolded wrong for %s", v)
	}
	if n := eventCount([]byte(v)); n != len(evs) {
		t.Errorf("eventCount %d, want %d", n, len(evs))
	}
	got, err := decodeEvents(eventKey(id, at), []byte(v))
	if err != nil || !slices.Equal(got, evs) {
		t.Fatalf("decoded %+v (%v), want %+v", got, err, evs)
	}
}

// The progress path's count of a task's events (for the history bound)
// never falls under the events the task has across a fold (put of the
// folded key, then deletes of the keys it replaces, in one revision), as
// the cache sees it on the watch or on a reload.
func TestProgressCacheCountsAcrossAFold(t *testing.T) {
	t.Parallel()
	id := "0a30e94b-aab0-45c0-849f-77fda0a3bf7d"
	at := time.Date(2026, 12, 2, 13, 0, 0, 0, time.UTC)
	pp := &ProgressPath{tasks: map[string]*cachedTask{}, regions: map[string]string{}}
	pp.applyLocked(statusKey(id), []byte(statusValue(StatusRecord{Status: wire.StatusCancelled, Attempt: 1})), 1, false, true)
	var evs []Event
	for i := range 5 {
		ev := Event{At: at.Add(time.Duration(i) * time.Second), Kind: "status", To: wire.StatusPending}
		evs = append(evs, ev)
		pp.applyLocked(eventKey(id, ev.At), []byte(eventValue(ev)), int64(2+i), false, true)
	}
	if n := pp.tasks[id].events; n != 5 {
		t.Fatalf("counted %d events, want 5", n)
	}
	// The fold at revision 10: the oldest key overwritten, four deleted.
	pp.applyLocked(eventKey(id, at), []byte(foldedValue(evs)), 10, false, false)
	for _, ev := range evs[1:] {
		pp.applyLocked(eventKey(id, ev.At), nil, 10, true, false)
	}
	if n := pp.tasks[id].events; n != 5 {
		t.Errorf("after the fold: %d events counted, want 5", n)
	}
	// A later delete of an event key (a bound) counts again.
	pp.applyLocked(eventKey(id, at), nil, 11, true, false)
	if n := pp.tasks[id].events; n != 4 {
		t.Errorf("after a delete: %d events counted, want 4", n)
	}
	// A reload reads the folded key before the status: it counts its events.
	re := &ProgressPath{tasks: map[string]*cachedTask{}, regions: map[string]string{}}
	re.applyLocked(eventKey(id, at), []byte(foldedValue(evs)), 10, false, true)
	re.applyLocked(statusKey(id), []byte(statusValue(StatusRecord{Status: wire.StatusCancelled, Attempt: 1})), 1, false, true)
	if n := re.tasks[id].events; n != 5 {
		t.Errorf("reloaded: %d events counted, want 5", n)
	}
}
