package app

import (
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// --memory-limit sets the Go runtime's soft memory limit
// (runtime/debug.SetMemoryLimit, as the GOMEMLIMIT environment variable
// does): the garbage collector runs more often as the process's Go memory
// (heap, stacks, runtime; not etcd's bbolt file mapping) nears it, instead
// of letting the heap grow to twice what is live (GOGC=100). It trades CPU
// for RSS (BENCHMARKS.md, "Issue 14: RSS with 10,000 tasks"). It is soft:
// when more is live than the limit, the heap grows past it and the
// runtime caps the collector at about half the CPU rather than fail.

// parseMemoryLimit reads --memory-limit: "" (keep GOMEMLIMIT or no
// limit), "off", or a size in bytes with an optional unit (KiB, MiB, GiB;
// B), as GOMEMLIMIT takes it. It returns -1 for "leave as is".
func parseMemoryLimit(s string) (int64, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return -1, nil
	case "off", "0":
		return math.MaxInt64, nil
	}
	num, mult := s, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("--memory-limit %q: give a size such as 160MiB or 1GiB (KiB, MiB, GiB, TiB or bytes), or off", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("--memory-limit %q: too large", s)
	}
	if n*mult < 32<<20 {
		return 0, fmt.Errorf("--memory-limit %q: use at least 32MiB (the collector would run almost continuously below that)", s)
	}
	return n * mult, nil
}

// applyMemoryLimit sets the runtime's soft memory limit from --memory-limit
// (limit from parseMemoryLimit) and logs what is in force.
func applyMemoryLimit(log *slog.Logger, limit int64) {
	if limit >= 0 {
		debug.SetMemoryLimit(limit)
	}
	cur := debug.SetMemoryLimit(-1) // reads without changing
	switch {
	case cur == math.MaxInt64:
		log.Debug("Go memory limit: none (the heap grows to twice what is live, GOGC)")
	case limit < 0:
		log.Info("Go memory limit from GOMEMLIMIT", "bytes", cur, "GOMEMLIMIT", os.Getenv("GOMEMLIMIT"))
	default:
		log.Info("Go memory limit from --memory-limit", "bytes", cur)
	}
}
