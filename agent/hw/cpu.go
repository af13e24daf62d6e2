package hw

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/lpmos/lpmos/agent/wire"
)

// CPU reads root/proc/cpuinfo. Sockets are the distinct "physical id"s,
// cores the distinct (physical id, core id) pairs (core ids are sparse on
// many Xeons, so max+1 would be wrong), threads the "processor" entries.
// Without topology lines (arm64, some VMs) it falls back to "cpu cores"
// per socket, then to one core per thread.
func CPU(root string) (wire.CPU, error) {
	data, err := os.ReadFile(filepath.Join(root, "proc/cpuinfo"))
	if err != nil {
		if isHostRoot(root) {
			return wire.CPU{Sockets: 1, Cores: runtime.NumCPU(), Threads: runtime.NumCPU()}, fmt.Errorf("cpu: %w", err)
		}
		return wire.CPU{}, fmt.Errorf("cpu: %w", err)
	}
	return parseCPUInfo(data)
}

func parseCPUInfo(data []byte) (wire.CPU, error) {
	var (
		out          wire.CPU
		bad          []string
		sockets      = map[int]bool{}
		cores        = map[[2]int]bool{}
		coresPerSock = 0
		topology     = true // every processor had parseable physical/core ids
		curSocket    = -1
		curCore      = -1
		inProc       = false
	)
	flush := func() {
		if !inProc {
			return
		}
		if curSocket < 0 || curCore < 0 {
			topology = false
		} else {
			sockets[curSocket] = true
			cores[[2]int{curSocket, curCore}] = true
		}
		curSocket, curCore, inProc = -1, -1, false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, val, found := strings.Cut(sc.Text(), ":")
		if !found {
			flush()
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch key {
		case "processor":
			flush()
			inProc = true
			out.Threads++
		case "model name", "Model", "Hardware":
			// x86 says "model name"; arm64 kernels have no model name and
			// some boards say "Hardware" or "Model" instead.
			if out.Model == "" {
				out.Model = val
			}
		case "physical id":
			if n, err := strconv.Atoi(val); err == nil {
				curSocket = n
			} else {
				bad = append(bad, "physical id "+strconv.Quote(val))
			}
		case "core id":
			if n, err := strconv.Atoi(val); err == nil {
				curCore = n
			} else {
				bad = append(bad, "core id "+strconv.Quote(val))
			}
		case "cpu cores":
			if n, err := strconv.Atoi(val); err == nil {
				coresPerSock = n
			} else {
				bad = append(bad, "cpu cores "+strconv.Quote(val))
			}
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("cpu: reading cpuinfo: %w", err)
	}

	switch {
	case topology && len(sockets) > 0:
		out.Sockets = len(sockets)
		out.Cores = len(cores)
	case out.Threads > 0:
		out.Sockets = 1
		out.Cores = out.Threads
		if coresPerSock > 0 && coresPerSock <= out.Threads {
			out.Cores = coresPerSock
		}
	}
	if len(bad) > 0 {
		return out, fmt.Errorf("cpu: malformed cpuinfo: %s", strings.Join(dedup(bad), ", "))
	}
	return out, nil
}

func dedup(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
