package store_test

import (
	"flag"
	"os"
	"testing"

	"github.com/lpmos/lpmos/internal/testenv"
)

// TestMain runs at least 4 parallel tests at once: each starts its own
// embedded etcd and spends most of its time waiting on it (fsyncs,
// elections, maintenance rounds), not computing.
func TestMain(m *testing.M) {
	flag.Parse()
	testenv.ParallelAtLeast(4)
	os.Exit(m.Run())
}
