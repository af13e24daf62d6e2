package store_test

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/lpmos/lpmos/store/storetest"
)

// storetest.FreePort's own test lives here, not in store/storetest: a test
// file there made `go test ./...` link a sixth race binary with etcd in it
// (about 5 s of CPU on every run) for this one test.
//
// A port FreePort handed out is reserved for other processes too (another
// package's test binary draws from the same range) until the test ends.
func TestFreePortReservedAcrossProcesses(t *testing.T) {
	var port int
	t.Run("holder", func(t *testing.T) {
		port = storetest.FreePort(t)
		if locked(t, port) != syscall.EWOULDBLOCK {
			t.Fatalf("port %d is not reserved while its test runs", port)
		}
	})
	if err := locked(t, port); err != nil {
		t.Fatalf("port %d still reserved after its test ended: %v", port, err)
	}
}

// locked tries the port's lock file from a new open file description, as
// another process would; nil means it was free (and is released again).
func locked(t *testing.T, port int) error {
	t.Helper()
	f, err := os.Open(filepath.Join(os.TempDir(), "lpmos-test-ports", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
