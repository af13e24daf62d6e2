package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

// TestCreateTasksBulk: many tasks in few transactions, each as CreateTask
// makes it; a MAC twice in the list or one with an active task refuses
// as CreateTask does.
func TestCreateTasksBulk(t *testing.T) {
	t.Parallel()
	s := storetest.New(t)
	ctx := context.Background()
	var specs []store.Spec
	for i := range 100 {
		specs = append(specs, spec(fmt.Sprintf("02:00:00:00:0d:%02x", i)))
	}
	tasks, err := s.CreateTasks(ctx, specs)
	if err != nil || len(tasks) != 100 {
		t.Fatalf("CreateTasks: %d tasks, %v", len(tasks), err)
	}
	list, _, err := s.ListTasks(ctx, store.Filter{})
	if err != nil || len(list) != 100 {
		t.Fatalf("listed %d, %v", len(list), err)
	}
	byMAC, err := s.TaskByMAC(ctx, "02:00:00:00:0d:07")
	if err != nil || byMAC.ID != tasks[7].ID || byMAC.Status.Status != "pending" {
		t.Fatalf("TaskByMAC: %+v %v", byMAC, err)
	}
	for _, tc := range []struct {
		name  string
		specs []store.Spec
	}{
		{"a MAC twice", []store.Spec{spec("02:00:00:00:0e:01"), spec("02:00:00:00:0e:01")}},
		{"a MAC with an active task", []store.Spec{spec("02:00:00:00:0e:02"), spec("02:00:00:00:0d:07")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.CreateTasks(ctx, tc.specs); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("err %v, want ErrConflict", err)
			}
		})
	}
	if _, err := s.CreateTasks(ctx, []store.Spec{{TargetMAC: "nope"}}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("invalid spec: %v", err)
	}
}
