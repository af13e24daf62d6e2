package pxe

import (
	"context"
	"fmt"
	"github.com/lpmos/lpmos/internal/testenv"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A DHCP client lpmos did not write (busybox udhcpc, as installed systems
// and initramfs images run it) asks for an address without any PXE vendor
// class. In full mode lpmos leases it one by default (AnswerAll), so the
// installed OS is reachable; with AnswerAll off it stays silent.
func TestFullDHCPAnswersNonPXEClientUdhcpc(t *testing.T) {
	busybox := testenv.RequireTool(t, "busybox", "busybox")
	for _, answerAll := range []bool{true, false} {
		t.Run(fmt.Sprintf("answer-all=%v", answerAll), func(t *testing.T) {
			n := newTestNet(t)
			leases := &MemLeases{}
			srv := newTestDHCP(t, DHCPConfig{Mode: ModeFull, Interface: srvIf, Full: FullDHCP{
				RangeStart: net.IPv4(10, 213, 0, 100), RangeEnd: net.IPv4(10, 213, 0, 150),
				Netmask: net.CIDRMask(24, 32), Router: net.IPv4(10, 213, 0, 1), DNS: []net.IP{net.IPv4(10, 213, 0, 53)},
				LeaseTime: time.Hour, Leases: leases, AnswerAll: answerAll,
			}})
			startInNetns(t, n, srv)
			var mac net.HardwareAddr
			if err := inNetns(n.cliNS, func() error {
				ifc, err := net.InterfaceByName(cliIf)
				if err == nil {
					mac = ifc.HardwareAddr
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}

			// udhcpc runs its script on each event; this one records them.
			dir := t.TempDir()
			out := filepath.Join(dir, "events")
			script := filepath.Join(dir, "script")
			if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$1 ip=$ip subnet=$subnet router=$router dns=$dns\" >>"+out+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// -n: give up without a lease; -q: exit once bound; -t/-T: 4
			// DISCOVERs a second apart (the first may beat the server's bind).
			cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n.cliNS,
				busybox, "udhcpc", "-f", "-n", "-q", "-i", cliIf, "-t", "4", "-T", "1", "-s", script)
			outb, runErr := cmd.CombinedOutput()
			events, _ := os.ReadFile(out)
			t.Logf("udhcpc: %v\n%s\nscript events:\n%s", runErr, outb, events)

			st := srv.Stats()
			if st.Received == 0 {
				t.Fatal("the server received none of udhcpc's packets")
			}
			l, ok, err := leases.Get(context.Background(), mac)
			if err != nil {
				t.Fatal(err)
			}
			if !answerAll {
				if runErr == nil || strings.Contains(string(events), "bound") || ok || st.Answered != 0 {
					t.Fatalf("PXE-only mode answered a plain client: err=%v lease=%v stats=%+v events=%q", runErr, ok, st, events)
				}
				return
			}
			if runErr != nil {
				t.Fatalf("udhcpc got no lease: %v", runErr)
			}
			want := "bound ip=10.213.0.100 subnet=255.255.255.0 router=10.213.0.1 dns=10.213.0.53"
			if !strings.Contains(string(events), want) {
				t.Fatalf("udhcpc events %q, want %q", events, want)
			}
			if !ok || !l.IP.Equal(net.IPv4(10, 213, 0, 100)) {
				t.Fatalf("lease of %v: %+v ok=%v", mac, l, ok)
			}
		})
	}
}
