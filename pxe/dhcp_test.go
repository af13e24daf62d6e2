package pxe

import (
	"context"
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func TestNewProxyDHCPValidates(t *testing.T) {
	ok := DHCPConfig{ServerIP: testServerIP, HTTPPort: 8081, Machines: newFakeMachines()}
	full := ok
	full.Mode = ModeFull
	full.Full = FullDHCP{RangeStart: net.IPv4(10, 213, 0, 100), RangeEnd: net.IPv4(10, 213, 0, 110),
		Netmask: net.CIDRMask(24, 32), Leases: &MemLeases{}}
	tests := []struct {
		name    string
		mutate  func(*DHCPConfig)
		wantErr string
	}{
		{"proxy ok", func(*DHCPConfig) {}, ""},
		{"off needs nothing", func(c *DHCPConfig) { *c = DHCPConfig{Mode: ModeOff} }, ""},
		{"unknown mode", func(c *DHCPConfig) { c.Mode = "relay" }, "unknown mode"},
		{"no server ip", func(c *DHCPConfig) { c.ServerIP = nil }, "server IP"},
		{"ipv6 server ip", func(c *DHCPConfig) { c.ServerIP = net.ParseIP("fd55::1") }, "server IP"},
		{"no http port", func(c *DHCPConfig) { c.HTTPPort = 0 }, "HTTP port"},
		{"no machines", func(c *DHCPConfig) { c.Machines = nil }, "Machines"},
		{"snponly ok", func(c *DHCPConfig) { c.UEFIBootFile = FileUEFISNP }, ""},
		{"unknown uefi file", func(c *DHCPConfig) { c.UEFIBootFile = "grubx64.efi" }, "UEFI boot file"},
		{"full ok", func(c *DHCPConfig) { *c = full }, ""},
		{"full no leases", func(c *DHCPConfig) { *c = full; c.Full.Leases = nil }, "Leases"},
		{"full reversed range", func(c *DHCPConfig) {
			*c = full
			c.Full.RangeStart, c.Full.RangeEnd = c.Full.RangeEnd, c.Full.RangeStart
		}, "after end"},
		{"full range across subnets", func(c *DHCPConfig) { *c = full; c.Full.RangeEnd = net.IPv4(10, 213, 1, 5) }, "subnet"},
		{"full no netmask", func(c *DHCPConfig) { *c = full; c.Full.Netmask = nil }, "netmask"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.mutate(&cfg)
			_, err := NewProxyDHCP(cfg)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("NewProxyDHCP: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("NewProxyDHCP error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestProxyRespond(t *testing.T) {
	withARM := fstest.MapFS{
		FileBIOS:      {Data: []byte("bios")},
		FileUEFI:      {Data: []byte("MZuefi")},
		FileUEFIARM64: {Data: []byte("MZarm")},
	}
	ipxe := func(r req) req { r.userClass = "iPXE"; r.vendor = "PXEClient:Arch:00007:UNDI:003010"; return r }
	httpClient := func(r req) req { r.vendor = "HTTPClient:Arch:00016:UNDI:003001"; return r }
	noVendor := func(r req) req { r.vendor = ""; return r }
	sid := func(ip net.IP) func(req) req { return func(r req) req { r.serverID = ip; return r } }
	id := func(r req) req { return r }
	otherServer := net.IPv4(10, 213, 0, 254)

	tests := []struct {
		name     string
		cfg      func(*DHCPConfig)
		svc      service
		rq       req
		mod      func(req) req
		want     outcome
		wantType msgType
		wantFile string
		wantVend string
		wantDst  string
	}{
		{name: "bios discover", rq: pxeReq(msgDiscover, macBIOS, 0), mod: id,
			want: outAnswer, wantType: msgOffer, wantFile: "undionly.kpxe", wantVend: "PXEClient", wantDst: "255.255.255.255:68"},
		{name: "no option 93 is bios", rq: pxeReq(msgDiscover, macBIOS, -1), mod: id,
			want: outAnswer, wantType: msgOffer, wantFile: "undionly.kpxe", wantVend: "PXEClient", wantDst: "255.255.255.255:68"},
		{name: "uefi x64 discover", rq: pxeReq(msgDiscover, macUEFI, 7), mod: id,
			want: outAnswer, wantType: msgOffer, wantFile: "ipxe.efi", wantVend: "PXEClient", wantDst: "255.255.255.255:68"},
		{name: "uefi bc discover", rq: pxeReq(msgDiscover, macUEFI, 9), mod: id,
			want: outAnswer, wantType: msgOffer, wantFile: "ipxe.efi", wantVend: "PXEClient", wantDst: "255.255.255.255:68"},
		{name: "uefi ia32 discover", rq: pxeReq(msgDiscover, macUEFI, 6), mod: id,
			want: outAnswer, wantType: msgOffer, wantFile: "ipxe.efi", wantVend: "PXEClient", wantDst: "255.255.255.255:68"},
		{name: "uefi snponly configured", cfg: func(c *DHCPConfig) { c.UEFIBootFile = FileUEFISNP },
			rq: pxeReq(msgDiscover, macUEFI, 7), mod: id,
			want: outAnswer, wantType: msgOffer, wantFile: "snponly.efi", wantVend: "PXEClient", wantDst: "255.255.255.255:68"},
		{name: "arm64 without build is ignored", rq: pxeReq(msgDiscover, macUEFI, 11), mod: id, want: outIgnored},
		{name: "arm64 with build", cfg: func(c *DHCPConfig) { c.BootFiles = withARM },
			rq: pxeReq(msgDiscover, macUEFI, 11), mod: id,
			want: outAnswer, wantType: msgOffer, wantFile: "snp-arm64.efi", wantVend: "PXEClient", wantDst: "255.255.255.255:68"},
		{name: "unsupported arch ignored", rq: pxeReq(msgDiscover, macUEFI, 14), mod: id, want: outIgnored},
		{name: "uefi http boot", rq: pxeReq(msgDiscover, macUEFI, 16), mod: httpClient,
			want: outAnswer, wantType: msgOffer, wantFile: "http://10.213.0.1:8081/boot/ipxe/ipxe.efi", wantVend: "HTTPClient", wantDst: "255.255.255.255:68"},
		{name: "ipxe gets the script", rq: pxeReq(msgDiscover, macUEFI, 7), mod: ipxe,
			want: outAnswer, wantType: msgOffer, wantFile: "http://10.213.0.1:8081/boot/52:54:00:aa:00:02.ipxe", wantVend: "PXEClient", wantDst: "255.255.255.255:68"},
		{name: "ipxe rfc3004 user class", rq: pxeReq(msgDiscover, macBIOS, 0),
			mod:  func(r req) req { r.userClass = "\x04iPXE"; return r },
			want: outAnswer, wantType: msgOffer, wantFile: "http://10.213.0.1:8081/boot/52:54:00:aa:00:01.ipxe", wantVend: "PXEClient", wantDst: "255.255.255.255:68"},
		{name: "vendor class case-insensitive", rq: pxeReq(msgDiscover, macBIOS, 0),
			mod:  func(r req) req { r.vendor = "pxeclient"; return r },
			want: outAnswer, wantType: msgOffer, wantFile: "undionly.kpxe", wantVend: "PXEClient", wantDst: "255.255.255.255:68"},
		{name: "non-pxe client ignored", rq: pxeReq(msgDiscover, macBIOS, 0), mod: noVendor, want: outIgnored},
		{name: "other vendor ignored", rq: pxeReq(msgDiscover, macBIOS, 0),
			mod: func(r req) req { r.vendor = "MSFT 5.0"; return r }, want: outIgnored},
		{name: "unknown mac ignored", rq: pxeReq(msgDiscover, macUnknown, 0), mod: id, want: outIgnored},
		{name: "machine lookup error", rq: pxeReq(msgDiscover, macBroken, 0), mod: id, want: outError},
		{name: "request for us acked", rq: pxeReq(msgRequest, macBIOS, 0), mod: sid(testServerIP),
			want: outAnswer, wantType: msgAck, wantFile: "undionly.kpxe", wantVend: "PXEClient", wantDst: "255.255.255.255:68"},
		{name: "address request on shared server ip ignored", rq: pxeReq(msgRequest, macBIOS, 0),
			mod:  func(r req) req { r.serverID, r.requested = testServerIP, net.IPv4(10, 213, 0, 77); return r },
			want: outIgnored},
		{name: "request for real dhcp server ignored", rq: pxeReq(msgRequest, macBIOS, 0), mod: sid(otherServer), want: outIgnored},
		{name: "request without server id ignored", rq: pxeReq(msgRequest, macBIOS, 0), mod: id, want: outIgnored},
		{name: "relayed discover goes to relay", rq: pxeReq(msgDiscover, macBIOS, 0),
			mod:  func(r req) req { r.giaddr = net.IPv4(10, 213, 5, 1); return r },
			want: outAnswer, wantType: msgOffer, wantFile: "undionly.kpxe", wantVend: "PXEClient", wantDst: "10.213.5.1:67"},
		{name: "release ignored", rq: pxeReq(msgRelease, macBIOS, 0), mod: id, want: outIgnored},
		{name: "pxe port request acked to peer", svc: svcPXE, rq: pxeReq(msgRequest, macBIOS, 0),
			mod:  func(r req) req { r.ciaddr = net.IPv4(10, 213, 0, 50); r.userClass = "iPXE"; return r },
			want: outAnswer, wantType: msgAck, wantFile: "http://10.213.0.1:8081/boot/52:54:00:aa:00:01.ipxe", wantVend: "PXEClient", wantDst: "10.213.0.50:2000"},
		{name: "pxe port discover ignored", svc: svcPXE, rq: pxeReq(msgDiscover, macBIOS, 0), mod: id, want: outIgnored},
		{name: "pxe port unknown mac ignored", svc: svcPXE, rq: pxeReq(msgRequest, macUnknown, 0), mod: id, want: outIgnored},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DHCPConfig{}
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			s := newTestDHCP(t, cfg)
			rq := tt.mod(tt.rq)
			peer := &net.UDPAddr{IP: net.IPv4(10, 213, 0, 50), Port: 2000}
			res := s.respond(context.Background(), rq.bytes(), peer, tt.svc)
			if res.outcome != tt.want {
				t.Fatalf("outcome %d (err %v), want %d", res.outcome, res.err, tt.want)
			}
			if tt.want != outAnswer {
				if res.reply != nil {
					t.Fatalf("got a reply for outcome %d", res.outcome)
				}
				return
			}
			if res.dst.String() != tt.wantDst {
				t.Errorf("destination %v, want %s", res.dst, tt.wantDst)
			}
			// Decode what would go on the wire.
			wire := res.reply.ToBytes()
			if len(wire) < bootpMinLen {
				t.Errorf("reply is %d bytes, want >= %d", len(wire), bootpMinLen)
			}
			rp, err := parsePacket(wire)
			if err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			checkPXEReply(t, rp, rq, tt.wantType, tt.wantFile, tt.wantVend)
			if !rp.YourIPAddr.Equal(net.IPv4zero) {
				t.Errorf("proxy reply yiaddr %v, want 0.0.0.0", rp.YourIPAddr)
			}
		})
	}
}

func TestProxyMalformed(t *testing.T) {
	s := newTestDHCP(t, DHCPConfig{})
	good := pxeReq(msgDiscover, macBIOS, 0).bytes()
	noType := pxeReq(0, macBIOS, 0).bytes()
	badCookie := append([]byte(nil), good...)
	badCookie[236] = 0
	optOverrun := append(append([]byte(nil), good[:240]...), optVendorClass, 200, 'P', 'X')
	noEnd := good[:len(good)-1]
	bigHlen := append([]byte(nil), good...)
	bigHlen[2] = 17
	badOp := append([]byte(nil), good...)
	badOp[0] = 7
	tests := map[string][]byte{
		"empty":          nil,
		"short header":   good[:100],
		"no cookie":      good[:236],
		"bad cookie":     badCookie,
		"option overrun": optOverrun,
		"no end option":  noEnd,
		"no type":        noType,
		"hlen 17":        bigHlen,
		"op 7":           badOp,
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			res := s.respond(context.Background(), b, &net.UDPAddr{}, svcDHCP)
			if res.outcome != outMalformed {
				t.Fatalf("outcome %d (err %v), want malformed", res.outcome, res.err)
			}
		})
	}
}

func TestRFC3396LongOptionRoundTrip(t *testing.T) {
	p := &dhcpv4.DHCPv4{OpCode: opBootReply, HWType: 1, ClientHWAddr: macBIOS, TransactionID: dhcpv4.TransactionID{0, 0, 0, 7}, Options: dhcpv4.Options{}}
	long := []byte(strings.Repeat("x", 600))
	p.UpdateOption(dhcpv4.OptMessageType(msgOffer))
	p.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, long))
	got, err := parsePacket(p.ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	if v := got.Options[optVendorSpecific]; string(v) != string(long) {
		t.Fatalf("long option came back as %d bytes, want %d", len(v), len(long))
	}
}

// fullServer is a full-mode server on 10.213.0.0/24 handing out .100-.102.
func fullServer(t *testing.T, mut func(*FullDHCP)) (*ProxyDHCP, *MemLeases, *time.Time) {
	t.Helper()
	leases := &MemLeases{}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f := FullDHCP{
		RangeStart: net.IPv4(10, 213, 0, 100), RangeEnd: net.IPv4(10, 213, 0, 102),
		Netmask: net.CIDRMask(24, 32), Router: net.IPv4(10, 213, 0, 254),
		DNS:       []net.IP{net.IPv4(10, 213, 0, 53), net.IPv4(10, 213, 0, 54)},
		LeaseTime: 10 * time.Minute, Leases: leases,
	}
	if mut != nil {
		mut(&f)
	}
	s := newTestDHCP(t, DHCPConfig{Mode: ModeFull, Full: f, Now: func() time.Time { return now }})
	return s, leases, &now
}

func TestFullMode(t *testing.T) {
	ctx := context.Background()
	peer := &net.UDPAddr{IP: net.IPv4zero, Port: 68}
	exchange := func(t *testing.T, s *ProxyDHCP, r req) (result, *dhcpv4.DHCPv4) {
		t.Helper()
		res := s.respond(ctx, r.bytes(), peer, svcDHCP)
		if res.reply == nil {
			return res, nil
		}
		p, err := parsePacket(res.reply.ToBytes())
		if err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		return res, p
	}

	t.Run("discover request ack with pxe options", func(t *testing.T) {
		s, leases, _ := fullServer(t, nil)
		d := pxeReq(msgDiscover, macBIOS, 0)
		_, offer := exchange(t, s, d)
		if offer == nil {
			t.Fatal("no offer")
		}
		checkPXEReply(t, offer, d, msgOffer, "undionly.kpxe", "PXEClient")
		if !offer.YourIPAddr.Equal(net.IPv4(10, 213, 0, 100)) {
			t.Fatalf("offered %v, want 10.213.0.100", offer.YourIPAddr)
		}
		if m := wantOpt(t, offer, optSubnetMask); net.IP(m).String() != "255.255.255.0" {
			t.Errorf("option 1 %v", net.IP(m))
		}
		if r := wantOpt(t, offer, optRouter); !net.IP(r).Equal(net.IPv4(10, 213, 0, 254)) {
			t.Errorf("option 3 %v", net.IP(r))
		}
		if d := wantOpt(t, offer, optDNS); len(d) != 8 {
			t.Errorf("option 6 %x, want two servers", d)
		}
		if lt := binary.BigEndian.Uint32(wantOpt(t, offer, optLeaseTime)); lt != 600 {
			t.Errorf("lease time %d, want 600", lt)
		}
		rq := pxeReq(msgRequest, macBIOS, 0)
		rq.serverID, rq.requested = testServerIP, offer.YourIPAddr
		_, ack := exchange(t, s, rq)
		if ack == nil {
			t.Fatal("no ack")
		}
		checkPXEReply(t, ack, rq, msgAck, "undionly.kpxe", "PXEClient")
		if !ack.YourIPAddr.Equal(offer.YourIPAddr) {
			t.Fatalf("ack yiaddr %v, want %v", ack.YourIPAddr, offer.YourIPAddr)
		}
		l, ok, _ := leases.Get(ctx, macBIOS)
		if !ok || !l.IP.Equal(offer.YourIPAddr) {
			t.Fatalf("lease %+v ok=%v", l, ok)
		}
		// The same MAC gets the same address again.
		_, again := exchange(t, s, d)
		if again == nil || !again.YourIPAddr.Equal(offer.YourIPAddr) {
			t.Fatalf("second offer %v, want %v", again, offer.YourIPAddr)
		}
	})

	t.Run("requested address is honoured when free", func(t *testing.T) {
		s, _, _ := fullServer(t, nil)
		d := pxeReq(msgDiscover, macBIOS, 0)
		d.requested = net.IPv4(10, 213, 0, 102)
		_, offer := exchange(t, s, d)
		if offer == nil || !offer.YourIPAddr.Equal(d.requested) {
			t.Fatalf("offer %v, want %v", offer, d.requested)
		}
	})

	t.Run("nak for an address outside the range or taken", func(t *testing.T) {
		s, leases, now := fullServer(t, nil)
		leases.Put(ctx, Lease{MAC: macUEFI, IP: net.IPv4(10, 213, 0, 101), Expires: now.Add(time.Hour)})
		for _, ip := range []net.IP{net.IPv4(10, 213, 0, 7), net.IPv4(10, 213, 0, 101), nil} {
			rq := pxeReq(msgRequest, macBIOS, 0)
			rq.serverID, rq.requested = testServerIP, ip
			res, nak := exchange(t, s, rq)
			if nak == nil || nak.MessageType() != msgNak {
				t.Fatalf("request %v: reply %+v, want NAK", ip, nak)
			}
			if !nak.YourIPAddr.Equal(net.IPv4zero) || res.dst.String() != "255.255.255.255:68" {
				t.Errorf("NAK yiaddr %v dst %v", nak.YourIPAddr, res.dst)
			}
		}
	})

	t.Run("request for another server is ignored", func(t *testing.T) {
		s, _, _ := fullServer(t, nil)
		rq := pxeReq(msgRequest, macBIOS, 0)
		rq.serverID, rq.requested = net.IPv4(10, 213, 0, 9), net.IPv4(10, 213, 0, 100)
		if res, _ := exchange(t, s, rq); res.outcome != outIgnored {
			t.Fatalf("outcome %d, want ignored", res.outcome)
		}
	})

	t.Run("pool exhaustion and expiry", func(t *testing.T) {
		s, leases, now := fullServer(t, func(f *FullDHCP) { f.RangeEnd = net.IPv4(10, 213, 0, 100) })
		leases.Put(ctx, Lease{MAC: macUEFI, IP: net.IPv4(10, 213, 0, 100), Expires: now.Add(time.Minute)})
		if res, _ := exchange(t, s, pxeReq(msgDiscover, macBIOS, 0)); res.outcome != outError {
			t.Fatalf("outcome %d, want error (pool exhausted)", res.outcome)
		}
		*now = now.Add(2 * time.Minute) // the other lease ran out
		if _, offer := exchange(t, s, pxeReq(msgDiscover, macBIOS, 0)); offer == nil || !offer.YourIPAddr.Equal(net.IPv4(10, 213, 0, 100)) {
			t.Fatalf("offer after expiry %v", offer)
		}
	})

	t.Run("release frees the address", func(t *testing.T) {
		s, leases, now := fullServer(t, nil)
		leases.Put(ctx, Lease{MAC: macBIOS, IP: net.IPv4(10, 213, 0, 100), Expires: now.Add(time.Hour)})
		rel := pxeReq(msgRelease, macBIOS, 0)
		rel.ciaddr = net.IPv4(10, 213, 0, 100)
		if res, _ := exchange(t, s, rel); res.outcome != outIgnored {
			t.Fatalf("release outcome %d", res.outcome)
		}
		if l, _, _ := leases.Get(ctx, macBIOS); !l.Expired(*now) {
			t.Fatalf("lease %+v still active after release", l)
		}
	})

	t.Run("non-pxe clients only with AnswerAll", func(t *testing.T) {
		plain := req{mt: msgDiscover, mac: macUnknown, xid: 9, arch: -1}
		s, _, _ := fullServer(t, nil)
		if res, _ := exchange(t, s, plain); res.outcome != outIgnored {
			t.Fatalf("outcome %d, want ignored", res.outcome)
		}
		s, _, _ = fullServer(t, func(f *FullDHCP) { f.AnswerAll = true })
		_, offer := exchange(t, s, plain)
		if offer == nil || offer.YourIPAddr.IsUnspecified() {
			t.Fatalf("AnswerAll: offer %v", offer)
		}
		if offer.BootFileName != "" || offer.Options[optVendorSpecific] != nil {
			t.Errorf("plain client got boot options: file %q", offer.BootFileName)
		}
		// A PXE client lpmos does not boot gets an address, no boot file.
		_, offer = exchange(t, s, pxeReq(msgDiscover, macUnknown, 0))
		if offer == nil || offer.BootFileName != "" {
			t.Fatalf("AnswerAll, unknown PXE client: offer %+v", offer)
		}
	})

	t.Run("server, router, network and broadcast are never handed out", func(t *testing.T) {
		s, _, _ := fullServer(t, func(f *FullDHCP) {
			f.RangeStart, f.RangeEnd = net.IPv4(10, 213, 0, 0), net.IPv4(10, 213, 0, 2)
		})
		_, offer := exchange(t, s, pxeReq(msgDiscover, macBIOS, 0))
		if offer == nil || !offer.YourIPAddr.Equal(net.IPv4(10, 213, 0, 2)) {
			t.Fatalf("offer %v, want 10.213.0.2 (.0 is the network, .1 the server)", offer)
		}
	})
}
