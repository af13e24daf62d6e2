package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lpmos/lpmos/app"
	"github.com/lpmos/lpmos/store"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// get fetches path from p and returns the status and body.
func (p *lpmosProc) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(p.url + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (p *lpmosProc) metricExact(t *testing.T, sample string) float64 {
	t.Helper()
	_, body := p.get(t, "/metrics")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in /metrics", sample)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

type healthRep struct {
	Status   string
	Alarm    string
	Services []struct{ Name, State, Error string }
}

func (p *lpmosProc) healthRep(t *testing.T) (int, healthRep) {
	t.Helper()
	code, body := p.get(t, "/api/v1/health")
	var rep healthRep
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("health %d %s: %v", code, body, err)
	}
	return code, rep
}

func poll(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fillToNoSpace calls put(i) for i = from, from+1, ... until etcd answers
// NOSPACE, and returns the next unused i and how many writes succeeded. The
// writes go 4 at a time: one at a time, each waited for its own WAL sync
// and wake-ups, which made this test's filling take minutes. Any other
// error, or an i past limit, fails the test.
func fillToNoSpace(t *testing.T, from, limit int, put func(i int) error) (next, written int) {
	t.Helper()
	var (
		nextI   atomic.Int64
		ok      atomic.Int64
		full    atomic.Bool
		mu      sync.Mutex
		failure error
	)
	nextI.Store(int64(from))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !full.Load() {
				i := int(nextI.Add(1) - 1)
				err := put(i)
				// A loaded box may time a write out (in flight beside
				// the others): write it again; NOSPACE is what counts.
				for try := 0; errors.Is(err, rpctypes.ErrTimeout) && try < 5; try++ {
					err = put(i)
				}
				switch {
				case err == nil && i <= limit:
					ok.Add(1)
				case store.IsNoSpace(err):
					full.Store(true)
				default:
					mu.Lock()
					if failure == nil {
						failure = fmt.Errorf("put %d: %v", i, err)
					}
					mu.Unlock()
					full.Store(true)
				}
			}
		})
	}
	wg.Wait()
	if failure != nil {
		t.Fatal(failure)
	}
	return int(nextI.Load()), int(ok.Load())
}

// A real `lpmos serve` with a 24 MiB etcd quota, filled to it: first with
// old revisions of rewritten keys, which lpmos frees by itself (compaction
// to the current revision, defrag, disarm); then with live data, which
// keeps the NOSPACE alarm raised and visible in /api/v1/health and
// /metrics, and task creation refused with a 503 naming it, until the data
// is deleted; then lpmos recovers, without a restart, and tasks can be
// created again.
func TestServeFillsEtcdToQuotaAndRecovers(t *testing.T) {
	t.Parallel()
	const quota = 16 << 20 // the least serve accepts
	dir := t.TempDir()
	p := startServe(t, dir, "--etcd-quota-bytes", fmt.Sprint(quota), "--etcd-maintenance-interval", "100ms")
	p.waitHealthy(t, 30*time.Second)
	// The gauge is set by the maintenance loop's first measurement, which
	// may come just after the first health answer.
	poll(t, 10*time.Second, "the quota in /metrics", func() bool { return p.metricExact(t, "lpmos_etcd_quota_bytes") == quota })
	pki := filepath.Join(dir, "pki")
	ctx := context.Background()
	ext, err := store.Open(ctx, store.Config{
		Endpoints: []string{fmt.Sprintf("https://127.0.0.1:%d", p.ports[2])}, CAFile: filepath.Join(pki, "ca.crt"),
		CertFile: filepath.Join(pki, "member.crt"), KeyFile: filepath.Join(pki, "member.key"),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	cli := ext.Client()
	recoveries := func() float64 { return p.metricExact(t, "lpmos_etcd_nospace_recoveries_total") }

	// 1. Rewritten keys: lpmos frees the old revisions alone.
	big := strings.Repeat("x", 512<<10)
	rec0 := recoveries()
	_, n := fillToNoSpace(t, 0, 400, func(i int) error {
		_, err := cli.Put(ctx, fmt.Sprintf("/filler/rewritten/%d", i%4), big)
		return err
	})
	t.Logf("NOSPACE after %d writes of 512 KiB to 4 keys", n)
	poll(t, 60*time.Second, "recovery from rewritten keys", func() bool { return recoveries() > rec0 })
	if out, err := p.cli(t, "task", "create", "--mac", "52:54:00:00:0c:01", "--os", "ubuntu", "--os-version", "22.04", "--allow-missing-image"); err != nil {
		t.Fatalf("task create after the first recovery: %v\n%s", err, out)
	}

	// 2. Live data: fill until lpmos says it cannot free enough.
	small := strings.Repeat("y", 64<<10)
	held := false
	for i, round := 0, 0; round < 20 && !held; round++ {
		rec := recoveries()
		i, _ = fillToNoSpace(t, i, 4000, func(i int) error {
			_, err := cli.Put(ctx, fmt.Sprintf("/filler/live/%05d", i), small)
			return err
		})
		poll(t, 60*time.Second, "lpmos's NOSPACE round", func() bool {
			_, rep := p.healthRep(t)
			return strings.Contains(rep.Alarm, "NOSPACE") && strings.Contains(fmt.Sprint(rep.Services), "--etcd-quota-bytes") || recoveries() > rec
		})
		_, rep := p.healthRep(t)
		held = rep.Alarm != ""
	}
	if !held {
		t.Fatal("live data never kept etcd out of space")
	}
	code, rep := p.healthRep(t)
	if code != 503 || rep.Status != "degraded" || rep.Alarm != store.NoSpaceMessage {
		t.Fatalf("health under NOSPACE: %d %+v", code, rep)
	}
	if v := p.metricExact(t, `lpmos_etcd_alarm{type="NOSPACE"}`); v != 1 {
		t.Fatalf("alarm gauge under NOSPACE: %v", v)
	}
	if db := p.metricExact(t, "lpmos_etcd_db_size_bytes"); db < 0.9*quota {
		t.Fatalf("db size under NOSPACE: %v", db)
	}
	out, err := p.cli(t, "task", "create", "--mac", "52:54:00:00:0c:02", "--os", "ubuntu", "--os-version", "22.04", "--allow-missing-image")
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "NOSPACE") {
		t.Fatalf("task create under NOSPACE: %v\n%s", err, out)
	}
	rec := recoveries()
	if _, err := cli.Delete(ctx, "/filler/", clientv3.WithPrefix()); err != nil {
		t.Fatalf("delete under NOSPACE: %v", err)
	}
	poll(t, 60*time.Second, "recovery after the filler was deleted", func() bool {
		code, rep := p.healthRep(t)
		return code == 200 && rep.Alarm == ""
	})
	if v := recoveries(); v != rec+1 {
		t.Fatalf("recoveries %v, want %v", v, rec+1)
	}
	if v := p.metricExact(t, `lpmos_etcd_alarm{type="NOSPACE"}`); v != 0 {
		t.Fatalf("alarm gauge after recovery: %v", v)
	}
	if out, err := p.cli(t, "task", "create", "--mac", "52:54:00:00:0c:02", "--os", "ubuntu", "--os-version", "22.04", "--allow-missing-image"); err != nil {
		t.Fatalf("task create after recovery: %v\n%s", err, out)
	}
	for _, want := range []string{"NOSPACE recovery: compacted the history", "defragmented this etcd member", "alarm disarmed", "still over the quota"} {
		if !strings.Contains(p.logText(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	p.stop(t)
}

func TestEtcdSpaceFlagsChecked(t *testing.T) {
	for _, tc := range []struct {
		env, args []string
		want      string
	}{
		{args: []string{"--etcd-quota-bytes", "1000"}, want: "--etcd-quota-bytes 1000: use at least 16 MiB"},
		{env: []string{"LPMOS_ETCD_QUOTA_BYTES", "99999999999"}, want: "at most 8 GiB"},
		{args: []string{"--etcd-compaction-retention", "10s"}, want: "--etcd-compaction-retention 10s: use at least 1m"},
		{args: []string{"--etcd-maintenance-interval", "1ms"}, want: "--etcd-maintenance-interval 1ms"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if tc.env != nil {
				t.Setenv(tc.env[0], tc.env[1])
			}
			var o, e bytes.Buffer
			root := app.NewRoot("test", &o, &e)
			root.SetArgs(append([]string{"serve", "--data-dir", t.TempDir()}, tc.args...))
			if err := root.Execute(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v %v: %v, want %q", tc.env, tc.args, err, tc.want)
			}
		})
	}
}
