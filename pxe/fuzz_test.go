package pxe

import (
	"bytes"
	"context"
	"flag"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the DHCP packet fixtures under testdata/pxe/dhcp")

const fixtureDir = "../testdata/pxe/dhcp"

// dhcpFixtures are client packets kept as files: the fuzz seed corpus, and
// each has the outcome a proxy server (MACs ...:01 and ...:02 allowed) must
// give it.
func dhcpFixtures() []struct {
	file string
	data []byte
	want outcome
	boot string
} {
	ipxe := pxeReq(msgDiscover, macUEFI, 7)
	ipxe.userClass = "iPXE"
	httpBoot := pxeReq(msgDiscover, macUEFI, 16)
	httpBoot.vendor = "HTTPClient:Arch:00016:UNDI:003001"
	nonPXE := pxeReq(msgDiscover, macBIOS, 0)
	nonPXE.vendor = ""
	good := pxeReq(msgDiscover, macBIOS, 0).bytes()
	return []struct {
		file string
		data []byte
		want outcome
		boot string
	}{
		{"discover-bios.bin", good, outAnswer, "undionly.kpxe"},
		{"discover-uefi-x64.bin", pxeReq(msgDiscover, macUEFI, 7).bytes(), outAnswer, "ipxe.efi"},
		{"discover-arm64.bin", pxeReq(msgDiscover, macUEFI, 11).bytes(), outIgnored, ""},
		{"discover-ipxe.bin", ipxe.bytes(), outAnswer, "http://10.213.0.1:8081/boot/52:54:00:aa:00:02.ipxe"},
		{"discover-httpclient.bin", httpBoot.bytes(), outAnswer, "http://10.213.0.1:8081/boot/ipxe/ipxe.efi"},
		{"discover-not-pxe.bin", nonPXE.bytes(), outIgnored, ""},
		{"discover-unknown-mac.bin", pxeReq(msgDiscover, macUnknown, 0).bytes(), outIgnored, ""},
		{"truncated-header.bin", good[:120], outMalformed, ""},
		{"truncated-options.bin", append(append([]byte(nil), good[:240]...), 60, 9, 'P', 'X'), outMalformed, ""},
		{"no-end-option.bin", good[:len(good)-1], outMalformed, ""},
	}
}

// TestDHCPFixtures checks the stored packets (and rewrites them with -update).
func TestDHCPFixtures(t *testing.T) {
	s := newTestDHCP(t, DHCPConfig{})
	for _, fx := range dhcpFixtures() {
		path := filepath.Join(fixtureDir, fx.file)
		if *update {
			if err := os.MkdirAll(fixtureDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, fx.data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Run(fx.file, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("fixture: %v (regenerate with go test ./pxe -run TestDHCPFixtures -update)", err)
			}
			res := s.respond(context.Background(), data, &net.UDPAddr{}, svcDHCP)
			if res.outcome != fx.want {
				t.Fatalf("outcome %d (err %v), want %d", res.outcome, res.err, fx.want)
			}
			if fx.want == outAnswer && res.reply.BootFileName != fx.boot {
				t.Fatalf("boot file %q, want %q", res.reply.BootFileName, fx.boot)
			}
		})
	}
}

// FuzzHandle feeds arbitrary bytes to the packet handler of a proxy and a
// full-mode server on both ports: it must never panic, and every reply must
// be a well-formed BOOTREPLY to the same transaction.
//
//	go test ./pxe -run '^$' -fuzz FuzzHandle -fuzztime 60s
func FuzzHandle(f *testing.F) {
	for _, fx := range dhcpFixtures() {
		data, err := os.ReadFile(filepath.Join(fixtureDir, fx.file))
		if err != nil {
			f.Fatalf("seed %s: %v", fx.file, err)
		}
		f.Add(data, uint8(0))
		f.Add(data, uint8(3))
	}
	rq := pxeReq(msgRequest, macBIOS, 0)
	rq.serverID, rq.requested = testServerIP, net.IPv4(10, 213, 0, 100)
	f.Add(rq.bytes(), uint8(1))
	f.Add(rq.bytes(), uint8(2))
	rel := pxeReq(msgRelease, macBIOS, 0)
	rel.ciaddr = net.IPv4(10, 213, 0, 100)
	f.Add(rel.bytes(), uint8(1))
	f.Add([]byte{}, uint8(0))

	proxy := newTestDHCP(f, DHCPConfig{})
	full := newTestDHCP(f, DHCPConfig{Mode: ModeFull, Full: FullDHCP{
		RangeStart: net.IPv4(10, 213, 0, 100), RangeEnd: net.IPv4(10, 213, 0, 103),
		Netmask: net.CIDRMask(24, 32), LeaseTime: time.Hour, Leases: &MemLeases{}, AnswerAll: true,
	}})
	f.Fuzz(func(t *testing.T, data []byte, sel uint8) {
		s := proxy
		if sel&1 == 1 {
			s = full
		}
		svc := svcDHCP
		if sel&2 == 2 {
			svc = svcPXE
		}
		peer := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 68}
		res := s.respond(context.Background(), data, peer, svc)
		if (res.reply != nil) != (res.outcome == outAnswer) {
			t.Fatalf("outcome %d with reply %v", res.outcome, res.reply != nil)
		}
		if res.reply == nil {
			return
		}
		if res.dst == nil {
			t.Fatal("reply without destination")
		}
		in, err := parsePacket(data)
		if err != nil {
			t.Fatalf("answered a packet that does not parse: %v", err)
		}
		out, err := parsePacket(res.reply.ToBytes())
		if err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if out.OpCode != opBootReply || out.TransactionID != in.TransactionID || !bytes.Equal(out.ClientHWAddr, in.ClientHWAddr) {
			t.Fatalf("reply op %d xid %v, want BOOTREPLY to %v", out.OpCode, out.TransactionID, in.TransactionID)
		}
		if mt := out.MessageType(); mt != msgOffer && mt != msgAck && mt != msgNak {
			t.Fatalf("reply message type %v", mt)
		}
	})
}
