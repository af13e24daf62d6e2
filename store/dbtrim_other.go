//go:build !linux

package store

import "go.etcd.io/etcd/server/v3/storage/backend"

// trimDBMapping: only Linux (MAP_POPULATE, madvise) is done.
func trimDBMapping(backend.Backend) (TrimmedDB, error) { return TrimmedDB{}, errNoTrim }
