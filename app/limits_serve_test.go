package app_test

import (
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/internal/testenv"
)

// TestServeRaisesNofile: a real `lpmos serve` started with a soft
// descriptor limit below its hard limit raises the soft one to the hard
// one at start, and sizes its connection caps from the raised limit
// ((1024 - 256) / 2 = 384 per listener), not from the one it was given.
// (Go's runtime itself already raises it to hard - 1 before main; serve
// takes the last one.)
func TestServeRaisesNofile(t *testing.T) {
	testenv.RequireTool(t, "prlimit", "util-linux")
	dir := t.TempDir()
	args, url, ports := serveArgs(t, dir)
	p := &lpmosProc{dataDir: dir, url: url, ports: ports, prefix: []string{"prlimit", "--nofile=300:1024", "--"}}
	spawn(t, "lpmos", p, args)
	p.waitHealthy(t, 30*time.Second)
	log := p.logText()
	for _, want := range []string{"soft=1024 hard=1024", "max_conns_per_listener=384"} {
		if !strings.Contains(log, want) {
			t.Errorf("the child's log lacks %q:\n%s", want, log)
		}
	}
	// The process's own view (/proc/self/limits, soft limit).
	if got := p.metric(t, "process_max_fds"); got != 1024 {
		t.Errorf("process_max_fds = %v, want 1024", got)
	}
	p.stop(t)
}
