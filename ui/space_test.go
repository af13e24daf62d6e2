package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
	"github.com/lpmos/lpmos/ui"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// waitUntil polls cond every 50ms until it holds or the deadline passes.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metricValue reads one sample of /metrics (-1 if absent).
func metricValue(t *testing.T, e *liveEnv, sample string) float64 {
	t.Helper()
	_, body := e.request(t, "GET", "/metrics", "", nil)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("metric %s: %v", sample, err)
	}
	return v
}

func healthOf(t *testing.T, e *liveEnv) (int, ui.HealthReport) {
	t.Helper()
	resp, body := e.request(t, "GET", "/api/v1/health", "", nil)
	var rep ui.HealthReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("health %d %s: %v", resp.StatusCode, body, err)
	}
	return resp.StatusCode, rep
}

func service(rep ui.HealthReport, name string) (state, errText string) {
	for _, s := range rep.Services {
		if s.Name == name {
			return s.State, s.Error
		}
	}
	return "", ""
}

// etcd filled to its (small) quota with live data: the NOSPACE alarm shows
// in /api/v1/health (503, the alarm message, etcd-space failed), in
// /metrics and as the API's error for writes; the dashboards stay
// connected. Once the data is deleted lpmos compacts, defragments and
// disarms by itself: health is ok again, writes work, and the dashboards
// see the new task live. Nothing restarts.
func TestNoSpaceShownAndRecovered(t *testing.T) {
	heavyTurn(t) // it fills etcd to its quota and waits on maintenance rounds
	const quota = noSpaceQuota
	st, ctx := smallStore(t, quota)
	e := newLiveOn(t, st)
	auth := http.Header{"Authorization": {"Bearer " + e.token}}

	waitUntil(t, 10*time.Second, "first measurement", func() bool {
		code, rep := healthOf(t, e)
		state, _ := service(rep, "etcd-space")
		return code == 200 && state == "running" && rep.Alarm == ""
	})
	if v := metricValue(t, e, "lpmos_etcd_quota_bytes"); v != quota {
		t.Fatalf("lpmos_etcd_quota_bytes = %v, want %d", v, quota)
	}
	if v := metricValue(t, e, "lpmos_etcd_db_size_bytes"); v <= 0 || v >= quota {
		t.Fatalf("lpmos_etcd_db_size_bytes = %v", v)
	}
	if v := metricValue(t, e, `lpmos_etcd_alarm{type="NOSPACE"}`); v != 0 {
		t.Fatalf("alarm gauge before: %v", v)
	}
	ws := e.dialWS(t, ctx)
	if m := readMsg(t, ctx, ws); m.Type != ui.MsgSnapshot {
		t.Fatalf("first /ws message %q", m.Type)
	}
	// The dashboard keeps reading, as a browser does: a reader answers the
	// server's pings (every 25 s), and filling etcd on a loaded machine
	// takes longer than that.
	wsMsgs, wsErr := make(chan wsMsg, 4096), make(chan error, 1)
	go func() {
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				wsErr <- err
				return
			}
			var m wsMsg
			if err := json.Unmarshal(data, &m); err != nil {
				wsErr <- fmt.Errorf("decode %s: %w", data, err)
				return
			}
			wsMsgs <- m
		}
	}()

	fillLive(t, ctx, st)
	waitUntil(t, 10*time.Second, "the alarm in /api/v1/health", func() bool {
		code, rep := healthOf(t, e)
		state, errText := service(rep, "etcd-space")
		return code == 503 && rep.Status == "degraded" && rep.Alarm == store.NoSpaceMessage &&
			state == "failed" && strings.HasPrefix(errText, store.NoSpaceMessage) && strings.Contains(errText, "--etcd-quota-bytes")
	})
	if v := metricValue(t, e, `lpmos_etcd_alarm{type="NOSPACE"}`); v != 1 {
		t.Fatalf("alarm gauge under NOSPACE: %v", v)
	}
	resp, body := e.request(t, "POST", "/api/v1/tasks", `{"region_id":"dc1","target_mac":"52:54:00:00:0b:01","os_type":"ubuntu","os_version":"22.04"}`, auth)
	if resp.StatusCode != 503 || !strings.Contains(body, "NOSPACE") || !strings.Contains(body, `"error"`) {
		t.Fatalf("create under NOSPACE: %d %s", resp.StatusCode, body)
	}

	before := metricValue(t, e, "lpmos_etcd_nospace_recoveries_total")
	// The operator (here the test) deletes the data; lpmos does the rest.
	// One delete of ~22 MiB of keys can outlast etcd's request timeout on a
	// busy box; it is idempotent, so a timed-out one is sent again.
	for try := 1; ; try++ {
		_, err := st.Client().Delete(ctx, "/filler/", clientv3.WithPrefix())
		if err == nil {
			break
		}
		if try == 5 || !strings.Contains(err.Error(), "request timed out") {
			t.Fatalf("delete under NOSPACE (try %d): %v", try, err)
		}
	}
	waitUntil(t, 30*time.Second, "recovery in /api/v1/health", func() bool {
		code, rep := healthOf(t, e)
		state, _ := service(rep, "etcd-space")
		return code == 200 && rep.Alarm == "" && state == "running"
	})
	if v := metricValue(t, e, `lpmos_etcd_alarm{type="NOSPACE"}`); v != 0 {
		t.Fatalf("alarm gauge after recovery: %v", v)
	}
	if v := metricValue(t, e, "lpmos_etcd_nospace_recoveries_total"); v != before+1 {
		t.Fatalf("recoveries counter: %v", v)
	}
	resp, body = e.request(t, "POST", "/api/v1/tasks", `{"region_id":"dc1","target_mac":"52:54:00:00:0b:01","os_type":"ubuntu","os_version":"22.04"}`, auth)
	if resp.StatusCode != 201 {
		t.Fatalf("create after recovery: %d %s", resp.StatusCode, body)
	}
	var task store.Task
	_ = json.Unmarshal([]byte(body), &task)
	// The dashboard connection survived the compaction to the current
	// revision and sees the new task live.
	timeout := time.After(10 * time.Second)
	for {
		var m wsMsg
		select {
		case m = <-wsMsgs:
		case err := <-wsErr:
			t.Fatalf("read /ws: %v", err)
		case <-timeout:
			t.Fatalf("no /ws message for task %s within 10 s of its creation", task.ID)
		}
		if m.Type == ui.MsgTask && m.TaskID == task.ID ||
			m.Type == ui.MsgSnapshot && len(m.Tasks) == 1 && m.Tasks[0].ID == task.ID {
			if m.Type == ui.MsgTask && m.Task.Status.Status != wire.StatusPending {
				t.Fatalf("task message %+v", m)
			}
			break
		}
	}
}

// A task whose status last changed before etcd's compaction can still be
// watched: the stream watches from the read's revision, not the status's
// (which etcd no longer has), and goes on.
func TestWatchOldTaskAfterCompaction(t *testing.T) {
	t.Parallel()
	e := newAPI(t)
	ctx := context.Background()
	var task store.Task
	e.do(t, "POST", "/api/v1/tasks", createBody, &task)
	bump, err := e.store.Client().Put(ctx, "/test/bump", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Client().Compact(ctx, bump.Header.Revision); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", e.url+"/api/v1/tasks/"+task.ID+"/watch", nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	var first ui.WatchLine
	if err := dec.Decode(&first); err != nil || first.Type != "snapshot" {
		t.Fatalf("first line: %+v %v", first, err)
	}
	go func() {
		_, _ = e.store.ClaimTask(ctx, task.ID, store.NewSecret())
		_, _ = e.store.Transition(ctx, task.ID, wire.StatusCancelled, "test")
	}()
	var seen []string
	for {
		var l ui.WatchLine
		if err := dec.Decode(&l); err != nil {
			break
		}
		if l.Type == "status" {
			seen = append(seen, string(l.Status.Status))
		}
	}
	if fmt.Sprint(seen) != "[ready cancelled]" {
		t.Fatalf("watched statuses after compaction %v", seen)
	}
}

// noSpaceQuota is the etcd quota of the tests that fill it (NOSPACE): small,
// since under -race the fill's CPU grows with its bytes (24 MiB took 27 s
// of CPU, 8 MiB 9 s) and the behaviour is the same (two fill rounds, a
// recovery by defrag, then the alarm held until data is deleted).
const noSpaceQuota = 8 << 20

// smallStore is a store with a small quota whose maintenance loop runs
// every 100ms until the test ends.
func smallStore(t *testing.T, quota int64) (*store.Store, context.Context) {
	t.Helper()
	cfg := storetest.Config(t, t.TempDir())
	cfg.Space = store.SpaceConfig{QuotaBytes: quota, Interval: 100 * time.Millisecond}
	st, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); st.RunMaintenance(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return st, ctx
}

// fillLive writes distinct 64 KiB keys under /filler/ until etcd refuses
// writes for lack of space and keeps refusing: live data, which compaction
// cannot free. (After a first NOSPACE lpmos may still find 10% of the quota
// free after a defrag and disarm: then the fill goes on.)
func fillLive(t *testing.T, ctx context.Context, st *store.Store) {
	t.Helper()
	val := strings.Repeat("x", 64<<10)
	i := 0
	for round := range 20 {
		recoveries := st.Space().Recoveries
		for ; i < 4000; i++ {
			_, err := st.Client().Put(ctx, fmt.Sprintf("/filler/%05d", i), val)
			if store.IsNoSpace(err) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		// lpmos compacts and defragments: either that frees enough and it
		// disarms (fill on), or it gives up until data is deleted.
		waitUntil(t, 30*time.Second, "lpmos's NOSPACE round", func() bool {
			sp := st.Space()
			return sp.NeedsOperator || sp.Recoveries > recoveries
		})
		if st.Space().NeedsOperator {
			t.Logf("NOSPACE held after %d KiB of filler (%d fill rounds): %+v", i*64, round+1, st.Space())
			return
		}
	}
	t.Fatal("etcd never stayed out of space")
}
