package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

func benchMAC(i int) string {
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", byte(i>>32), byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
}

// BenchmarkCreateTask measures one task creation: a transaction that checks
// the MAC index and writes spec, status, index and the first event.
func BenchmarkCreateTask(b *testing.B) {
	s := storetest.New(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		if _, err := s.CreateTask(ctx, spec(benchMAC(i))); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkListTasks10k lists 10,000 tasks (each with an event, and half
// with progress) at one revision.
func BenchmarkListTasks10k(b *testing.B) {
	s := storetest.New(b)
	ctx := context.Background()
	const n = 10000
	sem := make(chan struct{}, 32)
	errs := make(chan error, n)
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			_, err := s.CreateTask(ctx, spec(benchMAC(1<<20+i)))
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		tasks, _, err := s.ListTasks(ctx, store.Filter{})
		if err != nil || len(tasks) != n {
			b.Fatalf("listed %d tasks: %v", len(tasks), err)
		}
	}
}
