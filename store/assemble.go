package store

import (
	"encoding/json"
	"log/slog"

	"github.com/lpmos/lpmos/agent/wire"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// assembleTasks groups /tasks/{id}/... keys (in key order) into tasks.
// A task without both spec and status is incomplete and skipped.
func assembleTasks(kvs []*mvccpb.KeyValue, log *slog.Logger) []Task {
	var (
		out      []Task
		cur      Task
		has      int
		flushCur = func() {
			if has&3 == 3 {
				out = append(out, cur)
			}
		}
	)
	for _, kv := range kvs {
		id, kind, ok := taskKeyKind(string(kv.Key))
		if !ok {
			continue
		}
		if id != cur.ID {
			flushCur()
			cur, has = Task{ID: id}, 0
		}
		h, err := decodeTaskKey(&cur, kind, kv)
		has |= h
		if err != nil {
			log.Warn("store: undecodable value", "key", string(kv.Key), "error", err)
		}
	}
	flushCur()
	return out
}

// decodeTaskKey decodes one /tasks/{id}/{kind} value into t; has is 1
// for the spec, 2 for the status.
func decodeTaskKey(cur *Task, kind string, kv *mvccpb.KeyValue) (has int, err error) {
	switch kind {
	case "spec":
		err = json.Unmarshal(kv.Value, &cur.Spec)
		has = 1
	case "status":
		err = json.Unmarshal(kv.Value, &cur.Status)
		cur.Revision = kv.ModRevision
		has = 2
	case "hardware":
		var hw wire.Hardware
		err = json.Unmarshal(kv.Value, &hw)
		cur.Hardware = &hw
	case "partitions":
		var pt PartitionTable
		err = json.Unmarshal(kv.Value, &pt)
		cur.Partitions = &pt
	case "progress":
		var p wire.Progress
		p, err = decodeProgress(cur.ID, kv.Value)
		cur.Progress = &p
	case "bmc":
		cur.BMC, err = decodeBMCInfo(kv.Value)
	case "power":
		var ps PowerState
		err = json.Unmarshal(kv.Value, &ps)
		cur.Power = &ps
	case "target-disk":
		var td TargetDisk
		td, err = decodeTargetDisk(kv.Value)
		cur.TargetDisk = &td
	}
	return has, err
}
