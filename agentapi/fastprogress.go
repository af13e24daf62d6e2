package agentapi

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/httpapi"
	"github.com/lpmos/lpmos/store"
)

// fastProgress is the region's progress hot path: reports checked from the
// cache the store's ProgressPath keeps current by its watch, and written
// coalesced and batched (see store/fastprogress.go). Whatever it cannot
// decide goes the authoritative way (taskSession + ReportAgentProgress).
type fastProgress struct {
	r  *Region
	pp *store.ProgressPath

	mu         sync.Mutex
	installing int
	countedAt  time.Time
}

func newFastProgress(r *Region) *fastProgress {
	pp := r.st.NewProgressPath(r.cfg.RegionID, r.cfg.ProgressWindow)
	persist := r.cfg.ProgressPersist
	if persist <= 0 {
		persist = store.DefaultPersistInterval
	}
	if r.cfg.StallAfter > 0 {
		// The stall check reads the stored report: it must be fresh
		// well within the stall delay.
		persist = min(persist, r.cfg.StallAfter/4)
	}
	pp.SetPersistInterval(persist)
	return &fastProgress{r: r, pp: pp}
}

// report stores p from the cache when it can; ok false: take the
// authoritative path (which also words every refusal).
func (f *fastProgress) report(ctx context.Context, req *http.Request, p wire.Progress) (string, store.ProgressResult, bool) {
	tok := httpapi.Bearer(req)
	kind, id, ok := store.ParseAgentToken(tok)
	if !ok || kind != store.TokenSession || (p.TaskID != "" && p.TaskID != id) {
		return "", store.ProgressResult{}, false
	}
	mac := ""
	if p.MACAddress != "" {
		m, err := store.ParseMAC(p.MACAddress)
		if err != nil {
			return "", store.ProgressResult{}, false
		}
		mac = m
	}
	res, err := f.pp.Report(ctx, id, tok, mac, p)
	if err != nil {
		return "", store.ProgressResult{}, false
	}
	return id, res, true
}

// settle waits until the reports of the request's task that were answered
// on acceptance are written (or refused), so that what takes the
// authoritative way next is judged against a state holding them.
func (f *fastProgress) settle(ctx context.Context, req *http.Request) {
	if kind, id, ok := store.ParseAgentToken(httpapi.Bearer(req)); ok && kind == store.TokenSession {
		// A ctx that ends first fails the authoritative path too.
		_ = f.pp.WaitWritten(ctx, id)
	}
}

// nextReportMS is the report interval the region asks its agents for: 0
// (the agent's own, 1s) until the installing tasks outnumber ReportRate.
func (f *fastProgress) nextReportMS() int64 {
	if f.r.cfg.ReportRate <= 0 {
		return 0
	}
	f.mu.Lock()
	if time.Since(f.countedAt) > time.Second {
		f.installing, f.countedAt = f.pp.InstallingTasks(), time.Now()
	}
	n := f.installing
	f.mu.Unlock()
	ms := int64(float64(n) / f.r.cfg.ReportRate * 1000)
	if ms <= 1000 {
		return 0
	}
	return min((ms+99)/100*100, 60_000)
}
