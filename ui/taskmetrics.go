package ui

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
	"github.com/prometheus/client_golang/prometheus"
)

// taskMetrics follows every task's status through an etcd watch of its
// own and measures install durations (by OS and outcome), the time tasks
// spend in each status, and counts tasks by region and status. Each
// control-plane process sees every transition of the cluster: in a
// cluster of several members, aggregate with max() by instance, or scrape
// one member.
type taskMetrics struct {
	st  *store.Store
	log *slog.Logger

	mu     sync.Mutex
	tasks  map[string]*taskSeen
	loaded bool // the first load is done

	install  *prometheus.HistogramVec
	inStatus *prometheus.HistogramVec
	byRegion *prometheus.Desc
}

type taskSeen struct {
	status       wire.Status
	since        time.Time
	os, region   string
	installStart time.Time // when the current attempt started installing
}

func newTaskMetrics(st *store.Store, log *slog.Logger) *taskMetrics {
	return &taskMetrics{
		st: st, log: log, tasks: map[string]*taskSeen{},
		install: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lpmos_install_duration_seconds",
			Help:    "Installs from entering installing to their end, by OS and outcome (completed, failed, cancelled).",
			Buckets: []float64{30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200, 14400},
		}, []string{"os", "outcome"}),
		inStatus: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lpmos_task_status_duration_seconds",
			Help:    "Time tasks spent in a status before leaving it, by that status.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400},
		}, []string{"status"}),
		byRegion: prometheus.NewDesc("lpmos_tasks_by_region", "Tasks by region and status.", []string{"region", "status"}, nil),
	}
}

func (m *taskMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.install, m.inStatus, collectorFunc{desc: m.byRegion, collect: m.collectByRegion}}
}

func (m *taskMetrics) collectByRegion(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	counts := map[string]map[wire.Status]int{}
	for _, t := range m.tasks {
		if t.region == "" {
			continue
		}
		if counts[t.region] == nil {
			counts[t.region] = map[wire.Status]int{}
		}
		counts[t.region][t.status]++
	}
	m.mu.Unlock()
	for region, c := range counts {
		for _, st := range wire.AllStatuses {
			ch <- prometheus.MustNewConstMetric(m.byRegion, prometheus.GaugeValue, float64(c[st]), region, string(st))
		}
	}
}

// run loads every task, then applies the watch's changes, until ctx ends;
// a compacted watch reloads.
func (m *taskMetrics) run(ctx context.Context) {
	for ctx.Err() == nil {
		tasks, rev, err := m.st.TaskSummaries(ctx) // the store's task index, not a read of every key
		if err != nil {
			if ctx.Err() == nil {
				m.log.Warn("task metrics: list tasks", "error", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
			continue
		}
		m.load(tasks)
		for c := range m.st.WatchStored(ctx, rev+1, store.KindTaskCreated, store.KindTaskDeleted, store.KindStatus) { // counts statuses: no live progress
			if c.Kind == store.KindWatchRestart {
				break
			}
			m.apply(c)
		}
	}
}

func (m *taskMetrics) load(tasks []store.Task) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tasks = make(map[string]*taskSeen, len(tasks))
	m.loaded = true
	for _, t := range tasks {
		ts := &taskSeen{status: t.Status.Status, since: t.Status.UpdatedAt, os: t.Spec.OSType, region: t.Spec.RegionID}
		if ts.status == wire.StatusInstalling {
			ts.installStart = ts.since
		}
		m.tasks[t.ID] = ts
	}
}

func (m *taskMetrics) apply(c store.Change) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch c.Kind {
	case store.KindTaskDeleted:
		delete(m.tasks, c.TaskID)
	case store.KindTaskCreated:
		t := m.task(c.TaskID)
		t.os, t.region = c.Spec.OSType, c.Spec.RegionID
	case store.KindStatus:
		t := m.task(c.TaskID)
		now := c.Status.UpdatedAt
		if t.status == c.Status.Status {
			return
		}
		if t.status != "" && !t.since.IsZero() && now.After(t.since) {
			m.inStatus.WithLabelValues(string(t.status)).Observe(now.Sub(t.since).Seconds())
		}
		switch c.Status.Status {
		case wire.StatusInstalling:
			if t.installStart.IsZero() {
				t.installStart = now
			}
		case wire.StatusCompleted, wire.StatusFailed, wire.StatusCancelled:
			if !t.installStart.IsZero() {
				m.install.WithLabelValues(osLabel(t.os), string(c.Status.Status)).Observe(max(now.Sub(t.installStart), 0).Seconds())
			}
			t.installStart = time.Time{}
		case wire.StatusPending: // a retry starts a new attempt
			t.installStart = time.Time{}
		}
		t.status, t.since = c.Status.Status, now
	}
}

func (m *taskMetrics) task(id string) *taskSeen {
	t := m.tasks[id]
	if t == nil {
		t = &taskSeen{}
		m.tasks[id] = t
	}
	return t
}

func osLabel(os string) string {
	if os == "" {
		return "unknown"
	}
	return os
}
