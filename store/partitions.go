package store

import (
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/lpmos/lpmos/agent/wire"
)

// partitionsKey holds the partition table an install left on disk.
func partitionsKey(id string) string { return prefixTasks + id + "/partitions" }

// PartitionTable is /tasks/{id}/partitions: the partition table the agent
// left on disk, with the file system and role it found in each partition,
// from the last configuring report of attempt Attempt.
type PartitionTable struct {
	Attempt    int              `json:"attempt"`
	RecordedAt time.Time        `json:"recorded_at"`
	Partitions []wire.Partition `json:"partitions"`
}

// Limits of a reported partition table: a GPT has 128 entries, names are
// 36 UTF-16 code units.
const (
	maxPartitions        = 128
	maxPartitionNameLen  = 144
	maxPartitionFieldLen = 40
)

// validatePartitions bounds what an agent may store about partitions.
func validatePartitions(parts []wire.Partition) error {
	if len(parts) > maxPartitions {
		return fmt.Errorf("%w: %d partitions reported, at most %d", ErrInvalid, len(parts), maxPartitions)
	}
	for _, p := range parts {
		switch {
		case p.Number < 1 || p.Number > maxPartitions:
			return fmt.Errorf("%w: partition number %d is outside 1-%d", ErrInvalid, p.Number, maxPartitions)
		case p.StartBytes < 0 || p.SizeBytes < 0:
			return fmt.Errorf("%w: partition %d has a negative start or size", ErrInvalid, p.Number)
		case len(p.Name) > maxPartitionNameLen || !utf8.ValidString(p.Name):
			return fmt.Errorf("%w: partition %d: name is not UTF-8 of at most %d bytes", ErrInvalid, p.Number, maxPartitionNameLen)
		case len(p.Type) > maxPartitionFieldLen || len(p.FS) > maxPartitionFieldLen || len(p.Role) > maxPartitionFieldLen:
			return fmt.Errorf("%w: partition %d: type, fs and role are at most %d bytes", ErrInvalid, p.Number, maxPartitionFieldLen)
		}
	}
	return nil
}
