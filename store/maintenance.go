package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults of SpaceConfig.
const (
	// DefaultQuotaBytes is etcd's own default (2 GiB): lpmos keeps little
	// (tasks with bounded histories, discovered machines, regions), so it
	// is ample headroom, and a smaller db keeps a defrag, which blocks the
	// member while it copies the db, and a learner's snapshot short.
	DefaultQuotaBytes int64 = 2 << 30
	// DefaultCompactionRetention is the history etcd keeps: a watcher
	// further behind than that resyncs from a snapshot (the hub does).
	DefaultCompactionRetention = 5 * time.Minute
	// DefaultMaintenanceInterval is how often the maintenance loop
	// measures the db and checks the alarms.
	DefaultMaintenanceInterval = 10 * time.Second
	// A member defragments when a defrag would give back at least this
	// fraction of its db file AND at least this many bytes (free pages, or
	// what compaction left of the pages: store/dbpacked.go), at most once
	// per DefaultDefragMinInterval (a defrag blocks the member: 1.3 s for
	// the 68 MB db of 10,000 installed tasks).
	DefaultDefragMinFreeRatio       = 0.25
	DefaultDefragMinFreeBytes int64 = 16 << 20
	DefaultDefragMinInterval        = 30 * time.Minute
)

// NoSpaceMessage is what health, the dashboard and API errors say while
// etcd's NOSPACE alarm is raised.
const NoSpaceMessage = "etcd is out of space (NOSPACE): writes fail; lpmos is compacting and defragmenting"

// SpaceConfig tunes the embedded member's space management.
type SpaceConfig struct {
	// QuotaBytes is the backend quota: past it etcd raises the NOSPACE
	// alarm and refuses every write until the alarm is disarmed.
	QuotaBytes int64
	// CompactionRetention is the history kept by etcd's periodic
	// compaction, which also runs this often.
	CompactionRetention time.Duration
	// Interval of the maintenance loop (RunMaintenance).
	Interval time.Duration
	// Defragment when both thresholds are exceeded, at most once per
	// DefragMinInterval (NOSPACE recovery is not bound by it).
	DefragMinFreeRatio float64
	DefragMinFreeBytes int64
	DefragMinInterval  time.Duration
	// PurgeInterval of the purge of old WAL and snapshot files
	// (store/purge.go); default DefaultPurgeInterval.
	PurgeInterval time.Duration
}

func (s *Store) applySpaceDefaults(cfg Config) {
	sc := cfg.Space
	if sc.QuotaBytes <= 0 {
		sc.QuotaBytes = DefaultQuotaBytes
	}
	if sc.PurgeInterval <= 0 {
		sc.PurgeInterval = DefaultPurgeInterval
	}
	if sc.CompactionRetention <= 0 {
		sc.CompactionRetention = DefaultCompactionRetention
	}
	if sc.Interval <= 0 {
		sc.Interval = DefaultMaintenanceInterval
	}
	if sc.DefragMinFreeRatio <= 0 {
		sc.DefragMinFreeRatio = DefaultDefragMinFreeRatio
	}
	if sc.DefragMinFreeBytes <= 0 {
		sc.DefragMinFreeBytes = DefaultDefragMinFreeBytes
	}
	if sc.DefragMinInterval <= 0 {
		sc.DefragMinInterval = DefaultDefragMinInterval
	}
	s.space = sc
	s.maxEvents = cfg.MaxTaskEvents
	if s.maxEvents <= 0 {
		s.maxEvents = DefaultMaxTaskEvents
	}
}

// SpaceStatus is the last measurement of the maintenance loop.
type SpaceStatus struct {
	CheckedAt   time.Time `json:"checked_at"`
	QuotaBytes  int64     `json:"quota_bytes,omitempty"` // 0: unknown (external etcd)
	DBSize      int64     `json:"db_size_bytes"`
	DBSizeInUse int64     `json:"db_size_in_use_bytes"`
	// Alarms raised anywhere in the cluster ("NOSPACE", "CORRUPT").
	Alarms []string `json:"alarms,omitempty"`
	// NoSpace: a NOSPACE alarm is raised; every write fails.
	NoSpace      bool      `json:"no_space"`
	NoSpaceSince time.Time `json:"no_space_since,omitzero"`
	Error        string    `json:"error,omitempty"` // the last measurement failed
	// NeedsOperator: under NOSPACE, compaction and defragmentation did
	// not free enough (the space is live data) to disarm.
	NeedsOperator bool `json:"needs_operator,omitempty"`
	// Counters since start.
	Defrags int64 `json:"defrags"`
	// PurgeErrors: purges of old WAL/snapshot files that failed (and
	// were retried) since start, e.g. out of file descriptors.
	PurgeErrors  int64     `json:"purge_errors,omitempty"`
	Recoveries   int64     `json:"nospace_recoveries"`
	LastRecovery time.Time `json:"last_recovery,omitzero"`
}

// Space returns the last measurement (no etcd call: cheap for scrapes).
func (s *Store) Space() SpaceStatus {
	s.spaceMu.Lock()
	defer s.spaceMu.Unlock()
	out := s.spaceNow
	out.Alarms = slices.Clone(out.Alarms)
	return out
}

func (s *Store) updateSpace(f func(*SpaceStatus)) {
	s.spaceMu.Lock()
	defer s.spaceMu.Unlock()
	f(&s.spaceNow)
}

// IsNoSpace reports whether err is etcd refusing a write for lack of space.
func IsNoSpace(err error) bool {
	return err != nil && (errors.Is(err, rpctypes.ErrNoSpace) || errors.Is(err, rpctypes.ErrGRPCNoSpace) ||
		strings.Contains(err.Error(), "database space exceeded"))
}

// RunMaintenance measures the db and checks etcd's alarms every interval
// until ctx ends. On an embedded member it also defragments this member
// when that frees enough, and recovers from NOSPACE: compact to the
// current revision, defragment, and disarm this member's alarm once the
// db is back under the quota. Members of a cluster take turns (a defrag
// blocks the member), by their order in the membership. With external
// etcd it only measures (the operator maintains that cluster).
func (s *Store) RunMaintenance(ctx context.Context) {
	s.maintainOnce(ctx)
	t := time.NewTicker(s.space.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.maintainOnce(ctx)
	}
}

// measure reads this member's db sizes and the cluster's alarms.
func (s *Store) measure(ctx context.Context) (*clientv3.StatusResponse, []*etcdserverpb.AlarmMember, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ep := ""
	if eps := s.cli.Endpoints(); len(eps) > 0 {
		ep = eps[0] // external etcd; the embedded client ignores it
	}
	st, err := s.cli.Status(ctx, ep)
	if err != nil {
		return nil, nil, fmt.Errorf("etcd status: %w", err)
	}
	al, err := s.cli.AlarmList(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("etcd alarm list: %w", err)
	}
	return st, al.Alarms, nil
}

func (s *Store) record(st *clientv3.StatusResponse, alarms []*etcdserverpb.AlarmMember, also ...func(*SpaceStatus)) {
	var names []string
	noSpace := false
	for _, a := range alarms {
		if a.Alarm == etcdserverpb.AlarmType_NONE {
			continue
		}
		if !slices.Contains(names, a.Alarm.String()) {
			names = append(names, a.Alarm.String())
		}
		noSpace = noSpace || a.Alarm == etcdserverpb.AlarmType_NOSPACE
	}
	s.updateSpace(func(sp *SpaceStatus) {
		sp.CheckedAt = time.Now().UTC()
		if s.etcd != nil {
			sp.QuotaBytes = s.space.QuotaBytes
		}
		sp.DBSize, sp.DBSizeInUse = st.DbSize, st.DbSizeInUse
		if noSpace && !sp.NoSpace {
			sp.NoSpaceSince = time.Now().UTC()
		}
		sp.Alarms, sp.NoSpace, sp.Error = names, noSpace, ""
		if !noSpace {
			sp.NeedsOperator = false
		}
		for _, f := range also {
			f(sp)
		}
	})
}

func (s *Store) maintainOnce(ctx context.Context) {
	st, alarms, err := s.measure(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.updateSpace(func(sp *SpaceStatus) { sp.CheckedAt, sp.Error = time.Now().UTC(), err.Error() })
		}
		return
	}
	wasNoSpace := s.Space().NoSpace
	s.record(st, alarms)
	sp := s.Space()
	if sp.NoSpace && !wasNoSpace {
		s.log.Error("store: "+NoSpaceMessage, "db_size", st.DbSize, "db_size_in_use", st.DbSizeInUse, "quota", sp.QuotaBytes)
	}
	if s.etcd == nil {
		return // external etcd: measured, not maintained
	}
	own := uint64(s.etcd.Server.MemberID())
	if sp.NoSpace {
		s.recoverNoSpace(ctx, own, st, alarms)
		return
	}
	free := s.reclaimable(st.DbSize, st.DbSizeInUse)
	if free >= s.space.DefragMinFreeBytes && float64(free) >= s.space.DefragMinFreeRatio*float64(st.DbSize) &&
		time.Since(s.frag.lastDefrag) >= s.space.DefragMinInterval && s.myDefragTurn(own) {
		why := "free space"
		if free > st.DbSize-st.DbSizeInUse {
			why = "compaction left the pages part empty"
		}
		s.defrag(ctx, st, why)
	}
	s.foldRound(ctx) // store/fold.go
}

// recoverNoSpace compacts the history to the current revision, defrags this
// member (in its turn) and disarms this member's NOSPACE alarm once its db
// is back under the quota with room to spare.
func (s *Store) recoverNoSpace(ctx context.Context, own uint64, st *clientv3.StatusResponse, alarms []*etcdserverpb.AlarmMember) {
	rev := st.Header.Revision
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	_, err := s.cli.Compact(cctx, rev, clientv3.WithCompactPhysical())
	cancel()
	switch {
	case err == nil:
		s.log.Warn("store: NOSPACE recovery: compacted the history to the current revision", "revision", rev)
	case errors.Is(err, rpctypes.ErrCompacted) || errors.Is(err, rpctypes.ErrGRPCCompacted):
		// Already compacted to rev (an earlier round or another member).
	default:
		s.log.Error("store: NOSPACE recovery: compaction failed", "revision", rev, "error", err)
		return
	}
	if !s.myDefragTurn(own) {
		return
	}
	// A fresh measurement: compaction freed pages in the file.
	if cur, _, err := s.measure(ctx); err == nil {
		st = cur
	}
	// Not again at the same revision: nothing was deleted since the last
	// defrag, which would only block the member once more for nothing.
	if free := st.DbSize - st.DbSizeInUse; st.Header.Revision != s.defragRev && (free >= 1<<20 || float64(free) >= 0.1*float64(st.DbSize)) {
		if after, ok := s.defrag(ctx, st, "NOSPACE"); ok {
			st = after
		}
	}
	// Disarm with a tenth of the quota to spare, else the next write
	// raises the alarm again at once.
	if float64(st.DbSize) > 0.9*float64(s.space.QuotaBytes) {
		if !s.Space().NeedsOperator {
			s.log.Error("store: NOSPACE: still over the quota after compaction and defragmentation; delete data (old tasks, discovered machines) or raise --etcd-quota-bytes",
				"db_size", st.DbSize, "db_size_in_use", st.DbSizeInUse, "quota", s.space.QuotaBytes)
		}
		s.updateSpace(func(sp *SpaceStatus) { sp.NeedsOperator = true })
		return
	}
	disarmed := false
	for _, a := range alarms {
		if a.Alarm != etcdserverpb.AlarmType_NOSPACE || a.MemberID != own && s.etcd.Server.Cluster().Member(types.ID(a.MemberID)) != nil {
			continue // another live member's alarm: that member disarms it after its own defrag
		}
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := s.cli.AlarmDisarm(dctx, &clientv3.AlarmMember{MemberID: a.MemberID, Alarm: a.Alarm})
		cancel()
		if err != nil {
			s.log.Error("store: NOSPACE recovery: disarm failed", "member", fmt.Sprintf("%x", a.MemberID), "error", err)
			continue
		}
		disarmed = true
		s.log.Warn("store: NOSPACE recovery: alarm disarmed, writes work again", "member", fmt.Sprintf("%x", a.MemberID),
			"db_size", st.DbSize, "db_size_in_use", st.DbSizeInUse, "quota", s.space.QuotaBytes)
	}
	if disarmed {
		// One update: whoever sees the alarm gone sees the recovery counted.
		counted := func(sp *SpaceStatus) { sp.Recoveries++; sp.LastRecovery = time.Now().UTC() }
		if cur, al, err := s.measure(ctx); err == nil {
			s.record(cur, al, counted)
		} else {
			s.updateSpace(counted)
		}
	}
}

// defrag defragments this member and logs the sizes before and after.
func (s *Store) defrag(ctx context.Context, before *clientv3.StatusResponse, why string) (*clientv3.StatusResponse, bool) {
	s.log.Info("store: defragmenting this etcd member (it answers nothing meanwhile)", "reason", why,
		"db_size", before.DbSize, "db_size_in_use", before.DbSizeInUse)
	start := time.Now()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	var err error
	if s.etcd != nil {
		// Directly: the in-process client's maintenance server has no
		// health notifier and crashes on Defragment.
		err = s.etcd.Server.Defragment()
	} else {
		_, err = s.cli.Defragment(dctx, "")
	}
	cancel()
	if err != nil {
		s.log.Error("store: defragmentation failed", "reason", why, "error", err)
		return nil, false
	}
	s.defragRev = before.Header.Revision
	s.frag.lastDefrag, s.frag.packed = time.Now(), 0 // estimated again next round
	// Counted after the new sizes are recorded: a reader that sees the
	// count sees the sizes after it.
	defer s.updateSpace(func(sp *SpaceStatus) { sp.Defrags++ })
	after, alarms, err := s.measure(ctx)
	if err != nil {
		s.log.Info("store: defragmented this etcd member", "reason", why, "took", time.Since(start).Round(time.Millisecond), "db_size_before", before.DbSize)
		return nil, false
	}
	s.record(after, alarms)
	s.log.Info("store: defragmented this etcd member", "reason", why, "took", time.Since(start).Round(time.Millisecond),
		"db_size_before", before.DbSize, "db_size_after", after.DbSize, "db_size_in_use", after.DbSizeInUse)
	return after, true
}

// myDefragTurn spreads the members' defrags over time: time is cut into
// slots of one maintenance interval, and member i (by id order) may only
// defragment in slot i of each round, so two members never block at once
// (with clocks within a fraction of the interval). It needs no write, so
// it works under NOSPACE.
func (s *Store) myDefragTurn(own uint64) bool {
	var ids []uint64
	for _, m := range s.etcd.Server.Cluster().Members() {
		ids = append(ids, uint64(m.ID))
	}
	return defragTurn(ids, own, time.Now(), s.space.Interval)
}

// defragTurn says whether member own may defragment at now: member i of
// the sorted ids owns slot i of every round of len(ids) slots of length
// interval.
func defragTurn(ids []uint64, own uint64, now time.Time, interval time.Duration) bool {
	if len(ids) <= 1 {
		return true
	}
	ids = slices.Clone(ids)
	slices.Sort(ids)
	i := slices.Index(ids, own)
	if i < 0 {
		return false
	}
	slot := now.UnixNano() / int64(interval)
	return int(slot%int64(len(ids))) == i
}
