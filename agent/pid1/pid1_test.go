package pid1

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/lpmos/lpmos/agent/wire"
)

func TestParseModuleOrder(t *testing.T) {
	in := `# resolved from modules.dep by lpmos initramfs
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko   # core

  kernel/drivers/net/virtio_net.ko
/lib/modules/extra/e1000e.ko.xz
`
	want := []string{"kernel/drivers/virtio/virtio_ring.ko", "kernel/drivers/virtio/virtio.ko", "kernel/drivers/net/virtio_net.ko", "/lib/modules/extra/e1000e.ko.xz"}
	if got := ParseModuleOrder([]byte(in)); !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// The ioctl structs must have the kernel's sizes, or the kernel reads
// garbage. These are the 64-bit sizes (amd64, arm64).
func TestStructLayouts(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Fatal("layout test written for 64-bit targets")
	}
	for name, got := range map[string]uintptr{
		"sockaddr_in": unsafe.Sizeof(sockaddrIn{}), "ifreq(addr)": unsafe.Sizeof(ifreqAddr{}),
		"ifreq(flags)": unsafe.Sizeof(ifreqFlags{}), "rtentry": unsafe.Sizeof(rtentry{}),
	} {
		want := map[string]uintptr{"sockaddr_in": 16, "ifreq(addr)": 40, "ifreq(flags)": 40, "rtentry": 120}[name]
		if got != want {
			t.Errorf("sizeof %s = %d, want %d", name, got, want)
		}
	}
	var rt rtentry
	if off := unsafe.Offsetof(rt.Flags); off != 56 {
		t.Errorf("rtentry.rt_flags at %d, want 56", off)
	}
	if off := unsafe.Offsetof(rt.Dev); off != 88 {
		t.Errorf("rtentry.rt_dev at %d, want 88", off)
	}
}

func TestDHCPRoundTrip(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:aa:00:01")
	d := NewDiscover(0xdeadbeef, mac)
	b := d.Marshal()
	if len(b) < 300 || b[0] != 1 || binary.BigEndian.Uint32(b[4:]) != 0xdeadbeef || binary.BigEndian.Uint16(b[10:]) != 0x8000 ||
		!bytes.Equal(b[28:34], mac) || binary.BigEndian.Uint32(b[236:]) != 0x63825363 {
		t.Fatalf("DISCOVER encoding wrong:\n%s", hex.Dump(b[:64]))
	}
	back, err := ParseMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.Type() != dhcpDiscover || back.XID != 0xdeadbeef || back.CHAddr.String() != mac.String() ||
		string(back.Option(optVendorClass)) != "lpmos-agent" || !bytes.Equal(back.Option(optClientID), append([]byte{1}, mac...)) {
		t.Fatalf("round trip: %+v", back)
	}

	offer := &Message{Op: bootReply, XID: 0xdeadbeef, YIAddr: net.IPv4(10, 55, 0, 50), CHAddr: mac, Options: []Option{
		{optMessageType, []byte{dhcpOffer}}, {optServerID, []byte{10, 55, 0, 1}},
	}}
	req, err := ParseMessage(NewRequest(0xdeadbeef, mac, offer).Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if req.Type() != dhcpRequest || !bytes.Equal(req.Option(optRequestedIP), []byte{10, 55, 0, 50}) ||
		!bytes.Equal(req.Option(optServerID), []byte{10, 55, 0, 1}) {
		t.Fatalf("REQUEST: %+v", req)
	}
}

// ackFromDnsmasq is a hand-built DHCPACK with the options and option order
// dnsmasq sends (server id, lease, T1, T2, mask, broadcast, router, dns,
// domain, hostname), plus pad bytes inside the options.
func ackFromDnsmasq() []byte {
	b := make([]byte, 240)
	b[0], b[1], b[2] = 2, 1, 6
	binary.BigEndian.PutUint32(b[4:], 0x1a2b3c4d)
	binary.BigEndian.PutUint16(b[10:], 0x8000)
	copy(b[16:], []byte{10, 55, 0, 77})
	copy(b[20:], []byte{10, 55, 0, 1})
	copy(b[28:], []byte{0x52, 0x54, 0x00, 0xaa, 0x00, 0x01})
	binary.BigEndian.PutUint32(b[236:], 0x63825363)
	opts := []byte{
		53, 1, 5,
		54, 4, 10, 55, 0, 1,
		51, 4, 0, 0, 0x0e, 0x10, // 3600 s
		58, 4, 0, 0, 0x07, 0x08,
		59, 4, 0, 0, 0x0c, 0x4e,
		1, 4, 255, 255, 255, 0,
		28, 4, 10, 55, 0, 255,
		3, 4, 10, 55, 0, 1,
		6, 8, 10, 55, 0, 1, 9, 9, 9, 9,
		15, 3, 'l', 'a', 'b',
		12, 4, 'v', 'm', '7', '7',
		0, 0, // padding inside options
		255,
	}
	return append(b, opts...)
}

func TestParseAndLease(t *testing.T) {
	tests := []struct {
		name    string
		pkt     []byte
		want    Lease
		wantErr string
	}{
		{
			name: "dnsmasq ack", pkt: ackFromDnsmasq(),
			want: Lease{
				IP: net.IP{10, 55, 0, 77}, Mask: net.CIDRMask(24, 32), Router: net.IP{10, 55, 0, 1},
				DNS: []net.IP{{10, 55, 0, 1}, {9, 9, 9, 9}}, Server: net.IP{10, 55, 0, 1},
				Duration: time.Hour, Hostname: "vm77", Domain: "lab",
			},
		},
		{name: "short", pkt: make([]byte, 100), wantErr: "too short"},
		{name: "no cookie", pkt: make([]byte, 300), wantErr: "magic cookie"},
		{name: "truncated option", pkt: append(ackFromDnsmasq()[:240], 6, 8, 10, 55), wantErr: "runs past"},
		{name: "no address", pkt: func() []byte { b := ackFromDnsmasq(); copy(b[16:20], []byte{0, 0, 0, 0}); return b }(), wantErr: "without an address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseMessage(tt.pkt)
			var l Lease
			if err == nil {
				l, err = LeaseFrom(m)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(l, tt.want) {
				t.Errorf("lease %+v\nwant  %+v", l, tt.want)
			}
		})
	}
}

func TestPickNIC(t *testing.T) {
	nics := []wire.NIC{
		{Name: "eno1", MAC: "aa:00:00:00:00:01"},
		{Name: "eno2", MAC: "aa:00:00:00:00:02", Link: true},
		{Name: "ens3", MAC: "52:54:00:aa:00:01", Link: true},
	}
	tests := []struct {
		device, mac string
		want        string
		wantErr     bool
	}{
		{device: "eno1", want: "eno1"},
		{mac: "52:54:00:aa:00:01", want: "ens3"},
		{want: "eno2"},
		{mac: "ff:ff:ff:ff:ff:ff", want: "eno2"},
		{device: "eth9", wantErr: true},
	}
	for _, tt := range tests {
		got, err := PickNIC(nics, tt.device, tt.mac)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got.Name != tt.want) {
			t.Errorf("PickNIC(%q, %q) = %v, %v; want %s", tt.device, tt.mac, got.Name, err, tt.want)
		}
	}
	if _, err := PickNIC(nil, "", ""); err == nil {
		t.Error("no NICs accepted")
	}
}

func TestResolvConf(t *testing.T) {
	got := string(ResolvConf([]net.IP{{10, 0, 0, 1}, {9, 9, 9, 9}}, "lab"))
	if got != "search lab\nnameserver 10.0.0.1\nnameserver 9.9.9.9\n" {
		t.Errorf("got %q", got)
	}
}
