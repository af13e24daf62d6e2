package pxe

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Wire constants for the hand-built client packets below, kept apart from
// the library so the decoder is checked against bytes it did not produce.
const (
	opBootRequest     = 1
	opBootReply       = 2
	htypeEthernet     = 1
	flagBroadcast     = 0x8000
	bootpMinLen       = 300 // RFC 951
	optRequestedIP    = 50
	optLeaseTime      = 51
	optMessageType    = 53
	optServerID       = 54
	optParamRequest   = 55
	optVendorClass    = 60
	optUserClass      = 77
	optClientArch     = 93
	optClientUUID     = 97
	optSubnetMask     = 1
	optRouter         = 3
	optDNS            = 6
	optVendorSpecific = 43
	optEnd            = 255
)

// DHCP message types (option 53), short names for the tables.
type msgType = dhcpv4.MessageType

const (
	msgDiscover = dhcpv4.MessageTypeDiscover
	msgOffer    = dhcpv4.MessageTypeOffer
	msgRequest  = dhcpv4.MessageTypeRequest
	msgAck      = dhcpv4.MessageTypeAck
	msgNak      = dhcpv4.MessageTypeNak
	msgRelease  = dhcpv4.MessageTypeRelease
)

// Addresses used inside tests: they only ever appear in packets handed to
// respond() or sent inside network namespaces the tests create.
var (
	testServerIP = net.IPv4(10, 213, 0, 1).To4()
	macBIOS      = mustMAC("52:54:00:aa:00:01")
	macUEFI      = mustMAC("52:54:00:aa:00:02")
	macUnknown   = mustMAC("52:54:00:ff:ff:ff")
	macBroken    = mustMAC("52:54:00:ee:ee:ee")
	testUUID     = append([]byte{0}, bytes.Repeat([]byte{0xab}, 16)...)
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// fakeMachines allows a fixed set of MACs; macBroken makes it fail.
type fakeMachines struct {
	mu      sync.Mutex
	allowed map[string]bool
	calls   int
}

func newFakeMachines(macs ...net.HardwareAddr) *fakeMachines {
	f := &fakeMachines{allowed: map[string]bool{}}
	for _, m := range macs {
		f.allowed[m.String()] = true
	}
	return f
}

func (f *fakeMachines) Allowed(_ context.Context, mac net.HardwareAddr) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if macEqual(mac, macBroken) {
		return false, errors.New("etcd unavailable")
	}
	return f.allowed[mac.String()], nil
}

// req describes a client packet.
type req struct {
	mt        msgType
	mac       net.HardwareAddr
	xid       uint32
	vendor    string // option 60
	arch      int    // option 93; -1: absent
	userClass string // option 77, raw (as iPXE sends it)
	uuid      []byte // option 97
	serverID  net.IP // option 54
	requested net.IP // option 50
	ciaddr    net.IP
	giaddr    net.IP
	broadcast bool
}

// pxeReq is a PXE firmware DISCOVER for arch.
func pxeReq(mt msgType, mac net.HardwareAddr, arch int) req {
	return req{mt: mt, mac: mac, xid: 0x1234abcd, vendor: "PXEClient:Arch:00000:UNDI:002001", arch: arch, uuid: testUUID, broadcast: true}
}

// bytes encodes r the way a client would, field by field (independent of
// dhcpv4.ToBytes, so the decoder is checked against hand-built bytes).
func (r req) bytes() []byte {
	b := make([]byte, 240)
	b[0] = opBootRequest
	b[1] = htypeEthernet
	b[2] = byte(len(r.mac))
	binary.BigEndian.PutUint32(b[4:], r.xid)
	if r.broadcast {
		binary.BigEndian.PutUint16(b[10:], flagBroadcast)
	}
	copy(b[12:16], ip4(r.ciaddr))
	copy(b[24:28], ip4(r.giaddr))
	copy(b[28:44], r.mac)
	copy(b[236:], []byte{99, 130, 83, 99})
	opt := func(code byte, v []byte) { b = append(append(b, code, byte(len(v))), v...) }
	if r.mt != 0 {
		opt(optMessageType, []byte{byte(r.mt)})
	}
	if r.vendor != "" {
		opt(optVendorClass, []byte(r.vendor))
	}
	if r.arch >= 0 {
		opt(optClientArch, binary.BigEndian.AppendUint16(nil, uint16(r.arch)))
	}
	if r.userClass != "" {
		opt(optUserClass, []byte(r.userClass))
	}
	if r.uuid != nil {
		opt(optClientUUID, r.uuid)
	}
	if r.serverID != nil {
		opt(optServerID, r.serverID.To4())
	}
	if r.requested != nil {
		opt(optRequestedIP, r.requested.To4())
	}
	opt(optParamRequest, []byte{1, 3, 6, 43, 60, 66, 67})
	b = append(b, optEnd)
	return b
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("PXE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newTestDHCP(t testing.TB, cfg DHCPConfig) *ProxyDHCP {
	t.Helper()
	if cfg.ServerIP == nil {
		cfg.ServerIP = testServerIP
	}
	if cfg.HTTPPort == 0 {
		cfg.HTTPPort = 8081
	}
	if cfg.Machines == nil {
		cfg.Machines = newFakeMachines(macBIOS, macUEFI, macBroken)
	}
	cfg.Logger = testLogger(t)
	s, err := NewProxyDHCP(cfg)
	if err != nil {
		t.Fatalf("NewProxyDHCP: %v", err)
	}
	return s
}

// wantOpt returns option code of p or fails.
func wantOpt(t *testing.T, p *dhcpv4.DHCPv4, code byte) []byte {
	t.Helper()
	v, ok := p.Options[code]
	if !ok {
		t.Fatalf("reply has no option %d", code)
	}
	return v
}

// checkPXEReply asserts the fields every PXE boot answer carries.
func checkPXEReply(t *testing.T, rp *dhcpv4.DHCPv4, rq req, wantType msgType, wantFile, wantVendor string) {
	t.Helper()
	if rp.OpCode != opBootReply || xid(rp) != rq.xid || !bytes.Equal(rp.ClientHWAddr, rq.mac) {
		t.Fatalf("reply op=%d xid=%#x mac=%s, want reply to xid %#x mac %s", rp.OpCode, xid(rp), rp.ClientHWAddr, rq.xid, rq.mac)
	}
	if got := rp.MessageType(); got != wantType {
		t.Errorf("message type %v, want %v", got, wantType)
	}
	if !rp.ServerIPAddr.Equal(testServerIP) {
		t.Errorf("siaddr %v, want %v", rp.ServerIPAddr, testServerIP)
	}
	if rp.BootFileName != wantFile {
		t.Errorf("file %q, want %q", rp.BootFileName, wantFile)
	}
	if sid := wantOpt(t, rp, optServerID); !net.IP(sid).Equal(testServerIP) {
		t.Errorf("option 54 %v, want %v", net.IP(sid), testServerIP)
	}
	if v := string(wantOpt(t, rp, optVendorClass)); v != wantVendor {
		t.Errorf("option 60 %q, want %q", v, wantVendor)
	}
	if rq.uuid != nil {
		if v := wantOpt(t, rp, optClientUUID); !bytes.Equal(v, rq.uuid) {
			t.Errorf("option 97 %x, want %x", v, rq.uuid)
		}
	}
	if wantVendor == vendorPXEClient {
		if v := wantOpt(t, rp, optVendorSpecific); !bytes.Equal(v, []byte{6, 1, 8, 255}) {
			t.Errorf("option 43 %x, want 06 01 08 ff (discovery control = 8)", v)
		}
	}
}

// xid is p's transaction ID as a number.
func xid(p *dhcpv4.DHCPv4) uint32 {
	return binary.BigEndian.Uint32(p.TransactionID[:])
}
