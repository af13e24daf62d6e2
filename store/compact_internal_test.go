package store

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/disksel"
	"github.com/lpmos/lpmos/agent/wire"
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
	for _, redundant := range []string{id, "52:54:00:00:00:01", "mac_address", "task_id", ".505838390"} {
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
	old := mustJSON(p) // the full form written before
	if got, err := decodeProgress(id, []byte(old)); err != nil || got.TaskID != id || got.Seq != 7 || !got.UpdatedAt.Equal(at) {
		t.Errorf("old form %s decoded to %+v, %v", old, got, err)
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
	if v := statusValue(st); strings.Contains(v, ".505838390") || !strings.Contains(v, ".505Z") {
		t.Errorf("stored status %s: want updated_at to the millisecond", v)
	}
}
