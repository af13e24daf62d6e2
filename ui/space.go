package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/lpmos/lpmos/internal/health"
	"github.com/lpmos/lpmos/store"
	"github.com/prometheus/client_golang/prometheus"
)

// alarmMessage is the health report's alarm line: empty without alarm.
func (s *Server) alarmMessage() string {
	sp := s.cfg.Store.Space()
	switch {
	case sp.NoSpace:
		return store.NoSpaceMessage
	case len(sp.Alarms) > 0:
		return "etcd alarm raised: " + strings.Join(sp.Alarms, ", ")
	}
	return ""
}

// spaceHealth is the "etcd-space" service of /api/v1/health: the db size
// against the quota, and the alarms. Absent until the store's maintenance
// loop measured once.
func (s *Server) spaceHealth() []health.Service {
	sp := s.cfg.Store.Space()
	if sp.CheckedAt.IsZero() {
		return nil
	}
	svc := health.Service{Name: "etcd-space", State: health.Running, Since: sp.CheckedAt,
		Detail: fmt.Sprintf("db %s, %s in use", mib(sp.DBSize), mib(sp.DBSizeInUse))}
	if sp.QuotaBytes > 0 {
		svc.Detail = fmt.Sprintf("db %s of %s quota, %s in use", mib(sp.DBSize), mib(sp.QuotaBytes), mib(sp.DBSizeInUse))
	}
	if sp.Recoveries > 0 {
		svc.Detail += fmt.Sprintf("; recovered from NOSPACE %d time(s), last at %s", sp.Recoveries, sp.LastRecovery.Format("2006-01-02 15:04:05Z"))
	}
	switch {
	case sp.NoSpace:
		svc.State, svc.Error, svc.Since = health.Failed, store.NoSpaceMessage, sp.NoSpaceSince
		if sp.NeedsOperator {
			svc.Error += "; compaction and defragmentation cannot free enough: delete old tasks or discovered machines, or raise --etcd-quota-bytes"
		}
	case len(sp.Alarms) > 0:
		svc.State, svc.Error = health.Degraded, "etcd alarm raised: "+strings.Join(sp.Alarms, ", ")
	case sp.Error != "":
		svc.State, svc.Error = health.Degraded, "cannot measure the etcd db: "+sp.Error
	}
	return []health.Service{svc}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// spaceCollectors are the /metrics of etcd's space, read from the store's
// last measurement (a scrape never queries etcd).
func (s *Server) spaceCollectors() []prometheus.Collector {
	alarm := prometheus.NewDesc("lpmos_etcd_alarm", "1 while etcd has this alarm raised (NOSPACE: every write fails).", []string{"type"}, nil)
	gauge := func(name, help string, f func(store.SpaceStatus) int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return float64(f(s.cfg.Store.Space())) })
	}
	counter := func(name, help string, f func(store.SpaceStatus) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f(s.cfg.Store.Space())) })
	}
	return []prometheus.Collector{
		collectorFunc{desc: alarm, collect: func(ch chan<- prometheus.Metric) {
			sp := s.cfg.Store.Space()
			for _, typ := range []string{"NOSPACE", "CORRUPT"} {
				v := 0.0
				for _, a := range sp.Alarms {
					if a == typ {
						v = 1
					}
				}
				ch <- prometheus.MustNewConstMetric(alarm, prometheus.GaugeValue, v, typ)
			}
		}},
		gauge("lpmos_etcd_db_size_bytes", "Size of this etcd member's db file.", func(sp store.SpaceStatus) int64 { return sp.DBSize }),
		gauge("lpmos_etcd_db_size_in_use_bytes", "Bytes of this etcd member's db file in use (the rest a defrag frees).", func(sp store.SpaceStatus) int64 { return sp.DBSizeInUse }),
		gauge("lpmos_etcd_quota_bytes", "Backend quota of the embedded etcd member (0: external etcd).", func(sp store.SpaceStatus) int64 { return sp.QuotaBytes }),
		counter("lpmos_etcd_defrags_total", "Defragmentations of this etcd member by lpmos.", func(sp store.SpaceStatus) int64 { return sp.Defrags }),
		counter("lpmos_etcd_nospace_recoveries_total", "NOSPACE alarms lpmos disarmed after compaction and defragmentation.", func(sp store.SpaceStatus) int64 { return sp.Recoveries }),
		counter("lpmos_etcd_purge_errors_total", "Failed purges of old etcd WAL/snapshot files (e.g. out of file descriptors), logged and retried.", func(sp store.SpaceStatus) int64 { return sp.PurgeErrors }),
	}
}

// resyncTaskWatch sends a fresh snapshot of task id and watches on from
// its revision (after etcd compacted a task watch's history); nil when
// the task ended meanwhile.
func (s *Server) resyncTaskWatch(ctx context.Context, id string, enc *json.Encoder) (<-chan store.Change, error) {
	task, rev, err := s.cfg.Store.GetTaskRev(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("resync task %s: %w", id, err)
	}
	if err := enc.Encode(WatchLine{Type: "snapshot", TaskID: id, Task: &task}); err != nil {
		return nil, fmt.Errorf("resync task %s: %w", id, err)
	}
	if !task.Status.Status.Active() {
		return nil, nil // ended meanwhile: the snapshot said so
	}
	return s.cfg.Store.Watch(ctx, rev+1), nil
}
