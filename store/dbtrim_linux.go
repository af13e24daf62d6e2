//go:build linux

package store

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"golang.org/x/sys/unix"
)

var errFound = errors.New("found")

func trimDBMapping(be backend.Backend) (t TrimmedDB, err error) {
	tx := be.ConcurrentReadTx()
	tx.RLock()
	defer tx.RUnlock()
	// A backend closed under us (the member stopping, a db received from
	// the leader replacing it) has no bolt transaction left to read.
	defer func() {
		if r := recover(); r != nil {
			t, err = TrimmedDB{}, errNoTrim
		}
	}()
	// The first key of the key bucket that bbolt itself returns (the
	// backend hands out copies of recent writes first: UnsafeForEach
	// visits bbolt's keys that are not in its buffer, then the buffer):
	// its bytes are in the mapping, pinned by tx.
	var addr uintptr
	_ = tx.UnsafeForEach(schema.Key, func(k, _ []byte) error {
		if len(k) > 0 {
			addr = uintptr(unsafe.Pointer(unsafe.SliceData(k)))
		}
		return errFound
	})
	if addr == 0 {
		return TrimmedDB{}, errNoTrim
	}
	m, err := findMapping(addr)
	if err != nil {
		return TrimmedDB{}, err
	}
	// The db file, mapped shared and read-only: dropping its pages loses
	// nothing. Anything else (the key came from a copy after all) is left
	// alone.
	if !m.fileBacked || m.perms != "r--s" {
		return TrimmedDB{}, errNoTrim
	}
	if _, _, e := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_DONTNEED); e != 0 {
		return TrimmedDB{}, fmt.Errorf("madvise %s: %w", m.path, e)
	}
	after, err := findMapping(addr)
	if err != nil {
		return TrimmedDB{}, err
	}
	return TrimmedDB{MappedBytes: int64(m.end - m.start), ResidentBefore: m.rss, ResidentAfter: after.rss}, nil
}

// mapping is one line of /proc/self/smaps with its Rss.
type mapping struct {
	start, end uintptr
	perms      string
	path       string
	fileBacked bool
	rss        int64
}

// findMapping returns the mapping of this process that holds addr.
func findMapping(addr uintptr) (mapping, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return mapping{}, fmt.Errorf("read the mappings: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var (
		cur   mapping
		found bool
	)
	for sc.Scan() {
		line := sc.Text()
		fs := strings.Fields(line)
		if len(fs) == 0 {
			continue
		}
		if rng, ok := strings.CutSuffix(fs[0], ":"); ok { // a field of the current mapping
			if found && rng == "Rss" && len(fs) >= 2 {
				kb, err := strconv.ParseInt(fs[1], 10, 64)
				if err != nil {
					return mapping{}, fmt.Errorf("smaps Rss %q: %w", line, err)
				}
				cur.rss = kb << 10
				return cur, nil
			}
			continue
		}
		if found {
			break // the mapping had no Rss line
		}
		lo, hi, ok := strings.Cut(fs[0], "-")
		if !ok || len(fs) < 5 {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || uint64(addr) < start || uint64(addr) >= end {
			continue
		}
		found = true
		cur = mapping{start: uintptr(start), end: uintptr(end), perms: fs[1], fileBacked: fs[4] != "0"}
		if len(fs) >= 6 {
			cur.path = strings.Join(fs[5:], " ")
		}
	}
	if err := sc.Err(); err != nil {
		return mapping{}, fmt.Errorf("read the mappings: %w", err)
	}
	if found {
		return cur, nil
	}
	return mapping{}, fmt.Errorf("no mapping holds %#x", addr)
}
