package agentapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"sync"
	"testing"

	"github.com/lpmos/lpmos/agent/wire"
)

// lossyRegion stands in front of a region and answers 200 to the agent's
// progress reports of one stage without passing them on (lose): what the
// agent sees when the region answered reports and restarted before it
// stored them. It passes everything again once a report of a later stage
// has come (the region is back). It counts the region's 409s that asked
// for reports again.
type lossyRegion struct {
	lose     func(p wire.Progress) bool
	mu       sync.Mutex
	back     bool
	lost     int
	resendOf []string
}

func (l *lossyRegion) handler(t *testing.T, target string) http.Handler {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Path != wire.PathProgress || resp.StatusCode != http.StatusConflict {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		var e wire.Error
		if json.Unmarshal(body, &e) == nil && e.ResendFrom != "" {
			l.mu.Lock()
			l.resendOf = append(l.resendOf, e.ResendFrom)
			l.mu.Unlock()
		}
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == wire.PathProgress {
			body, err := io.ReadAll(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			req.Body = io.NopCloser(bytes.NewReader(body))
			var p wire.Progress
			if err := json.Unmarshal(body, &p); err != nil {
				t.Errorf("progress body: %v", err)
			}
			l.mu.Lock()
			drop := !l.back && l.lose(p)
			if drop {
				l.lost++
			} else if l.lost > 0 {
				l.back = true // a later report got through: the region is back
			}
			l.mu.Unlock()
			if drop {
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(wire.ProgressResponse{Status: wire.StatusInstalling})
				return
			}
		}
		proxy.ServeHTTP(w, req)
	})
}

// TestRealAgentResendsReportsTheRegionLost: reports the region answered
// and lost before storing them (a restart: the region answers stage
// changes on acceptance and coalesces within-stage reports) leave etcd
// behind the agent; the agent's next report of a later stage is refused
// with resend_from, and the real agent sends its last report of each
// missing stage again, then goes on: the install completes with every
// stage recorded, in order.
func TestRealAgentResendsReportsTheRegionLost(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		lose   func(p wire.Progress) bool
		resend string
	}{
		{"the whole partitioning stage (the move to installing)", func(p wire.Progress) bool { return p.Stage == wire.StagePartitioning }, wire.StagePartitioning},
		{"the installing stage", func(p wire.Progress) bool { return p.Stage == wire.StageInstalling }, wire.StageInstalling},
		{"configuring at 100 (a coalesced report)", func(p wire.Progress) bool {
			return p.Stage == wire.StageConfiguring && p.Percentage == 100
		}, wire.StageConfiguring},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := newStore(t)
			addImage(t, st, "ubuntu", "22.04", make([]byte, 200_000))
			// The agent reaches the region only through the lossy front
			// (its PublicURL: the image URL too, which gets the session).
			var (
				mu    sync.Mutex
				to    http.Handler
				lossy = &lossyRegion{lose: tc.lose}
			)
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				mu.Lock()
				h := to
				mu.Unlock()
				h.ServeHTTP(w, req)
			}))
			t.Cleanup(front.Close)
			r := newRegion(t, st, "dc1", func(c *Config) { c.PublicURL = front.URL })
			mu.Lock()
			to = lossy.handler(t, r.srv.URL)
			mu.Unlock()
			r.start(t)
			task := createTask(t, st, "dc1")
			waitStatus(t, st, task.ID, wire.StatusReady)

			_, script := getText(t, r.srv.URL+"/boot/"+task.Spec.TargetMAC+".ipxe")
			m := regexp.MustCompile(`lpmos_task=(\S+) lpmos_token=(\S+) `).FindStringSubmatch(script)
			if m == nil {
				t.Fatalf("no agent parameters in script:\n%s", script)
			}
			done := liveAgentAt(t, front.URL, task.Spec.TargetMAC, m[1], m[2])
			waitStatus(t, st, task.ID, wire.StatusPendingApproval)
			if _, err := st.Transition(t.Context(), task.ID, wire.StatusApproved, "operator"); err != nil {
				t.Fatal(err)
			}
			waitAgent(t, done)
			waitStatus(t, st, task.ID, wire.StatusCompleted)

			lossy.mu.Lock()
			lost, resendOf := lossy.lost, slices.Clone(lossy.resendOf)
			lossy.mu.Unlock()
			if lost == 0 || !slices.Equal(resendOf, []string{tc.resend}) {
				t.Fatalf("lost %d reports, the region asked to resend from %v; want some lost and one ask from %s", lost, resendOf, tc.resend)
			}
			events, err := st.Events(t.Context(), task.ID)
			if err != nil {
				t.Fatal(err)
			}
			var stages []string
			for _, e := range events {
				if e.Kind == "stage" {
					stages = append(stages, e.Stage)
				}
			}
			want := []string{wire.StagePartitioning, wire.StageDownloading, wire.StageInstalling, wire.StageConfiguring, wire.StageCompleted}
			if !slices.Equal(stages, want) {
				t.Errorf("stage events %v, want %v", stages, want)
			}
			got, err := st.GetTask(t.Context(), task.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Progress == nil || got.Progress.Stage != wire.StageCompleted || got.Progress.Percentage != 100 {
				t.Errorf("stored progress %+v", got.Progress)
			}
		})
	}
}
