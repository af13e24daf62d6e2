package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

// snapFiles counts the member's *.snap files.
func snapFiles(t *testing.T, snapDir string) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(snapDir, "*.snap"))
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

// addOldSnaps writes n snapshot files that sort before any real one.
func addOldSnaps(t *testing.T, snapDir string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := os.WriteFile(filepath.Join(snapDir, fmt.Sprintf("0000000000000000-%016x.snap", i)), []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// Old WAL and snapshot files are purged by lpmos (etcd's own purge exits
// the process on its first error): out of file descriptors, the purge
// fails, is counted and retried, the member keeps running, and once
// descriptors are back the purge and the writes go on. (The crash:
// etcd failed its WAL purge under EMFILE and the whole process died.)
func TestPurgeSurvivesDescriptorExhaustion(t *testing.T) {
	cfg := storetest.Config(t, t.TempDir())
	cfg.Space.PurgeInterval = 100 * time.Millisecond
	s, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	snapDir := filepath.Join(cfg.DataDir, "etcd", "member", "snap")

	// 1. The purge runs: 8 old snapshot files go down to etcd's 5.
	addOldSnaps(t, snapDir, 1, 8)
	waitFor(t, 30*time.Second, "old snapshot files purged to 5", func() bool { return snapFiles(t, snapDir) <= 5 })

	// 2. Exhaust this process's descriptors (soft limit lowered to what
	// is open now plus a few, the rest filled).
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	low := lim
	low.Cur = uint64(len(fds) + 32)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var held []*os.File
	release := func() {
		for _, f := range held {
			f.Close()
		}
		held = nil
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Errorf("restore the descriptor limit: %v", err)
		}
	}
	t.Cleanup(release)
	for {
		f, err := os.Open(os.DevNull)
		if errors.Is(err, syscall.EMFILE) {
			break
		}
		if err != nil {
			release()
			t.Fatal(err)
		}
		held = append(held, f)
	}
	errs0 := s.Space().PurgeErrors
	deadline := time.Now().Add(30 * time.Second)
	for s.Space().PurgeErrors < errs0+3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // no descriptor needed
	}
	got := s.Space().PurgeErrors
	release()
	if got < errs0+3 {
		t.Fatalf("purge errors %d -> %d while out of descriptors: want them counted", errs0, got)
	}
	t.Logf("%d purge errors counted while out of descriptors; the process is still here", got-errs0)

	// 3. Descriptors back: the member writes, and the purge goes on.
	if _, err := s.CreateTask(ctx, spec("02:00:00:00:0f:01")); err != nil {
		t.Fatalf("create a task after the exhaustion: %v", err)
	}
	addOldSnaps(t, snapDir, 100, 8)
	waitFor(t, 30*time.Second, "old snapshot files purged again", func() bool { return snapFiles(t, snapDir) <= 5 })
}
