package app

import (
	"fmt"
	"time"

	"github.com/lpmos/lpmos/store"
	"github.com/spf13/cobra"
)

// addEtcdSpaceFlags adds the flags of the embedded member's space
// management: quota, compaction and the maintenance loop.
func addEtcdSpaceFlags(cmd *cobra.Command, o *serveOptions) {
	f := cmd.Flags()
	f.Int64Var(&o.etcdQuotaBytes, "etcd-quota-bytes", store.DefaultQuotaBytes,
		"embedded etcd backend quota in bytes: past it etcd raises NOSPACE and refuses writes until lpmos has compacted, defragmented and disarmed it")
	f.DurationVar(&o.etcdCompactionRetention, "etcd-compaction-retention", store.DefaultCompactionRetention,
		"etcd history kept by the periodic compaction, which runs this often (at least 1m)")
	f.DurationVar(&o.etcdMaintenanceInterval, "etcd-maintenance-interval", store.DefaultMaintenanceInterval,
		"how often lpmos measures the etcd db, checks its alarms and defragments when that frees enough")
}

// etcdSpace checks the space flags and turns them into the store's config.
func (o serveOptions) etcdSpace() store.SpaceConfig {
	return store.SpaceConfig{
		QuotaBytes:          o.etcdQuotaBytes,
		CompactionRetention: o.etcdCompactionRetention,
		Interval:            o.etcdMaintenanceInterval,
	}
}

// checkEtcdSpace refuses values etcd would misbehave with.
func (o serveOptions) checkEtcdSpace() error {
	switch {
	case o.etcdQuotaBytes < 16<<20:
		return fmt.Errorf("--etcd-quota-bytes %d: use at least 16 MiB (16777216); the default is %d (2 GiB)", o.etcdQuotaBytes, store.DefaultQuotaBytes)
	case o.etcdQuotaBytes > 8<<30:
		return fmt.Errorf("--etcd-quota-bytes %d: etcd supports at most 8 GiB (8589934592)", o.etcdQuotaBytes)
	case o.etcdCompactionRetention < time.Minute:
		return fmt.Errorf("--etcd-compaction-retention %s: use at least 1m (dashboards and regions resync from a snapshot when they fall further behind)", o.etcdCompactionRetention)
	case o.etcdMaintenanceInterval < 100*time.Millisecond:
		return fmt.Errorf("--etcd-maintenance-interval %s: use at least 100ms", o.etcdMaintenanceInterval)
	}
	return nil
}
