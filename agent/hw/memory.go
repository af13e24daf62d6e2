package hw

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/lpmos/lpmos/agent/wire"
)

// Memory reads MemTotal from root/proc/meminfo. Only when root is the
// running system does it fall back to syscall.Sysinfo: for a fixture tree
// the host's memory would be a wrong answer, not a fallback.
func Memory(root string) (wire.Memory, error) {
	total, err := memTotal(root)
	if err != nil && isHostRoot(root) {
		var si syscall.Sysinfo_t
		if serr := syscall.Sysinfo(&si); serr == nil {
			return memory(uint64(si.Totalram) * uint64(si.Unit)), nil
		}
	}
	if err != nil {
		return wire.Memory{}, fmt.Errorf("memory: %w", err)
	}
	return memory(total), nil
}

// memory rounds to the nearest GiB: MemTotal is the installed size minus
// what firmware and the kernel keep, so 16 GiB shows as about 15.6.
func memory(total uint64) wire.Memory {
	return wire.Memory{TotalBytes: total, TotalGB: int((total + 1<<29) >> 30)}
}

func memTotal(root string) (uint64, error) {
	data, err := os.ReadFile(filepath.Join(root, "proc/meminfo"))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || key != "MemTotal" {
			continue
		}
		fields := strings.Fields(val)
		if len(fields) == 0 {
			return 0, errors.New("empty MemTotal")
		}
		kb, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("MemTotal %q: %w", strings.TrimSpace(val), err)
		}
		return kb * 1024, nil
	}
	return 0, errors.New("no MemTotal in meminfo")
}
