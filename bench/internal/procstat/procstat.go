// Package procstat is what the benchmark commands (bench/fleet, bench/rss)
// read of the lpmos process they start: a free loopback port to give it,
// fields of /proc/PID/status and samples of its /metrics.
package procstat

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// FreePort is a TCP port free on 127.0.0.1 at the moment of the call.
func FreePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Status reads fields of /proc/PID/status (e.g. "VmRSS", in KiB); a field
// the file lacks, or an unreadable file, leaves it out of the map.
func Status(pid int, fields ...string) map[string]int64 {
	out := map[string]int64{}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		for _, want := range fields {
			if len(f) >= 2 && f[0] == want+":" {
				out[want], _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	return out
}

// Metric reads one unlabelled sample of base+"/metrics"; -1 when the
// request fails or the sample is not there.
func Metric(base, name string) float64 {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	return -1
}
