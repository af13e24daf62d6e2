package store

import (
	"time"

	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/storage/datadir"
)

// etcd purges its old WAL and snapshot files itself, but stops the whole
// process (a zap Fatal) on the first error, and reading the directory fails
// when the process is out of file descriptors (EMFILE): one descriptor
// exhaustion killed lpmos. The embedded member runs with etcd's purge off
// and lpmos runs the same purge (etcd's fileutil, same files kept): an
// error is logged, counted (SpaceStatus.PurgeErrors) and retried.

// DefaultPurgeInterval is etcd's own purge interval.
const DefaultPurgeInterval = 30 * time.Second

// disableEtcdPurge turns etcd's own purge off (lpmos runs startPurge).
func disableEtcdPurge(ec *embed.Config) {
	ec.MaxWalFiles, ec.MaxSnapFiles = 0, 0
}

// startPurge purges the member's old WAL and snapshot files in dir, keeping
// etcd's defaults (5 of each), until the member stops.
func (s *Store) startPurge(dir string, stop <-chan struct{}) {
	wal, snap := datadir.ToWALDir(dir), datadir.ToSnapDir(dir)
	go s.purgeFiles(wal, "wal", embed.DefaultMaxWALs, true, stop) // in-use WAL files are locked
	go s.purgeFiles(snap, "snap.db", embed.DefaultMaxSnapshots, false, stop)
	go s.purgeFiles(snap, "snap", embed.DefaultMaxSnapshots, false, stop)
}

func (s *Store) purgeFiles(dir, suffix string, keep uint, flock bool, stop <-chan struct{}) {
	lg := s.etcdZap
	for {
		var done <-chan struct{}
		var errc <-chan error
		if flock {
			done, errc = fileutil.PurgeFileWithDoneNotify(lg, dir, suffix, keep, s.space.PurgeInterval, stop)
		} else {
			done, errc = fileutil.PurgeFileWithoutFlock(lg, dir, suffix, keep, s.space.PurgeInterval, stop)
		}
		<-done // the purge returns when stopped or on its first error
		var err error
		select {
		case err = <-errc:
		default:
			return // stopped
		}
		s.updateSpace(func(sp *SpaceStatus) { sp.PurgeErrors++ })
		s.log.Warn("purging old etcd files failed (out of file descriptors?); retrying", "dir", dir, "suffix", suffix, "retry_in", s.space.PurgeInterval, "error", err)
		select {
		case <-stop:
			return
		case <-time.After(s.space.PurgeInterval):
		}
	}
}
