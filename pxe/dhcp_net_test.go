package pxe

// Real-socket DHCP tests.
//
// Broadcast path (port 67): each test builds its own pair of network
// namespaces, lpmos-test-<random>-s (server) and -c (client), joined by a
// veth pair (vs0 10.213.0.1/24 <-> vc0, no address, like PXE firmware).
// ProxyDHCP.Start runs in the test process on a goroutine whose locked OS
// thread has entered the server namespace, so its sockets (bound to vs0 with
// SO_BINDTODEVICE) live there; the client socket is made the same way in the
// client namespace. Nothing leaves those namespaces, and t.Cleanup deletes
// them. It needs root and iproute2, as CI has.
//
// Unicast path (port 4011): plain loopback sockets in the test's namespace.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"github.com/lpmos/lpmos/internal/testenv"
	"net"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"
)

type testNet struct {
	srvNS, cliNS string
}

const (
	srvIf = "vs0"
	cliIf = "vc0"
)

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v\n%s", args, err, out)
	}
}

// newTestNet creates the two namespaces and the veth between them.
func newTestNet(t *testing.T) *testNet {
	t.Helper()
	testenv.RequireRoot(t, "network namespaces")
	testenv.RequireTool(t, "ip", "iproute2")
	b := make([]byte, 4)
	rand.Read(b)
	n := &testNet{srvNS: "lpmos-test-" + hex.EncodeToString(b) + "-s", cliNS: "lpmos-test-" + hex.EncodeToString(b) + "-c"}
	for _, ns := range []string{n.srvNS, n.cliNS} {
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v\n%s", ns, err, out)
			}
		})
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	}
	ipCmd(t, "-n", n.srvNS, "link", "add", srvIf, "type", "veth", "peer", "name", cliIf, "netns", n.cliNS)
	ipCmd(t, "-n", n.srvNS, "addr", "add", "10.213.0.1/24", "dev", srvIf)
	ipCmd(t, "-n", n.srvNS, "link", "set", srvIf, "up")
	ipCmd(t, "-n", n.cliNS, "link", "set", cliIf, "up")
	return n
}

// inNetns runs fn on a fresh goroutine whose OS thread has joined netns ns.
// The thread stays locked and is thrown away when the goroutine ends, so no
// other goroutine ever runs in that namespace; sockets fn creates stay there.
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with us
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// startInNetns runs srv.Start in the server namespace until the test ends.
func startInNetns(t *testing.T, n *testNet, srv *ProxyDHCP) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inNetns(n.srvNS, func() error { return srv.Start(ctx) }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Start: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("DHCP server did not stop")
		}
	})
}

// dhcpClient is a UDP socket on :68 bound to the client's veth.
func dhcpClient(t *testing.T, n *testNet) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := inNetns(n.cliNS, func() (err error) {
		c, err = listenUDP(context.Background(), "0.0.0.0:68", cliIf)
		return err
	})
	if err != nil {
		t.Fatalf("client socket: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var bcast67 = &net.UDPAddr{IP: net.IPv4bcast, Port: 67}

// waitHandled waits until srv has received and finished want packets.
func waitHandled(t testing.TB, srv *ProxyDHCP, want uint64) DHCPStats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := srv.Stats()
		if st.Received >= want && st.Answered+st.Ignored+st.Malformed+st.Errors == st.Received {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("server handled %+v, want %d packets", st, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readReply returns the first reply for transaction want, or nil when none arrives
// within wait.
func readReply(t *testing.T, c *net.UDPConn, want uint32, wait time.Duration) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	t.Helper()
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(wait))
	for {
		n, from, err := c.ReadFromUDP(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, nil
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		p, err := parsePacket(buf[:n])
		if err != nil {
			t.Fatalf("reply from %v does not parse: %v", from, err)
		}
		if xid(p) == want {
			return p, from
		}
	}
}

func TestProxyDHCPBroadcastNetns(t *testing.T) {
	n := newTestNet(t)
	srv := newTestDHCP(t, DHCPConfig{Interface: srvIf})
	startInNetns(t, n, srv)
	c := dhcpClient(t, n)

	// Wait for the server: a probe nobody answers (not a PXE client).
	probe := req{mt: msgDiscover, mac: macBIOS, xid: 1, arch: -1}.bytes()
	for i := 0; srv.Stats().Received == 0; i++ {
		if i == 200 {
			t.Fatal("server never received the probe")
		}
		if _, err := c.WriteTo(probe, bcast67); err != nil {
			t.Fatalf("send probe: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Let any probe still in flight land, so the counters below are exact.
	for last := uint64(0); ; {
		st := waitHandled(t, srv, 1)
		if st.Received == last {
			break
		}
		last = st.Received
		time.Sleep(50 * time.Millisecond)
	}

	ipxe := pxeReq(msgDiscover, macUEFI, 7)
	ipxe.userClass, ipxe.xid = "iPXE", 0x1003
	nonPXE := pxeReq(msgDiscover, macBIOS, 0)
	nonPXE.vendor, nonPXE.xid = "", 0x1004
	unknown := pxeReq(msgDiscover, macUnknown, 0)
	unknown.xid = 0x1005
	request := pxeReq(msgRequest, macBIOS, 0)
	request.serverID, request.xid = testServerIP, 0x1006
	bios := pxeReq(msgDiscover, macBIOS, 0)
	bios.xid = 0x1001
	uefi := pxeReq(msgDiscover, macUEFI, 7)
	uefi.xid = 0x1002
	uefi.vendor = "PXEClient:Arch:00007:UNDI:003016"

	tests := []struct {
		name     string
		rq       req
		raw      []byte // sent instead of rq when set
		wantType msgType
		wantFile string
		stat     func(DHCPStats) uint64
	}{
		{"bios arch 0", bios, nil, msgOffer, "undionly.kpxe", func(s DHCPStats) uint64 { return s.Answered }},
		{"uefi arch 7", uefi, nil, msgOffer, "ipxe.efi", func(s DHCPStats) uint64 { return s.Answered }},
		{"ipxe user class", ipxe, nil, msgOffer, "http://10.213.0.1:8081/boot/52:54:00:aa:00:02.ipxe", func(s DHCPStats) uint64 { return s.Answered }},
		{"request for us", request, nil, msgAck, "undionly.kpxe", func(s DHCPStats) uint64 { return s.Answered }},
		{"non-pxe client", nonPXE, nil, 0, "", func(s DHCPStats) uint64 { return s.Ignored }},
		{"unknown mac", unknown, nil, 0, "", func(s DHCPStats) uint64 { return s.Ignored }},
		{"truncated", req{xid: 0x1007}, bios.bytes()[:200], 0, "", func(s DHCPStats) uint64 { return s.Malformed }},
		{"garbage", req{xid: 0x1008}, []byte("\x01\x01\x06\x00not dhcp at all"), 0, "", func(s DHCPStats) uint64 { return s.Malformed }},
		{"option overrun", req{xid: 0x1009}, append(bios.bytes()[:240], 60, 250, 'P'), 0, "", func(s DHCPStats) uint64 { return s.Malformed }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := srv.Stats()
			pkt := tt.raw
			if pkt == nil {
				pkt = tt.rq.bytes()
			}
			if _, err := c.WriteTo(pkt, bcast67); err != nil {
				t.Fatalf("send: %v", err)
			}
			after := waitHandled(t, srv, before.Received+1)
			if tt.stat(after) != tt.stat(before)+1 {
				t.Errorf("counter did not move: before %+v after %+v", before, after)
			}
			wait := 2 * time.Second
			if tt.wantType == 0 {
				wait = 200 * time.Millisecond // handled and counted: nothing may come
			}
			rp, from := readReply(t, c, tt.rq.xid, wait)
			if tt.wantType == 0 {
				if rp != nil {
					t.Fatalf("got a %v, want no answer", rp.MessageType())
				}
				return
			}
			if rp == nil {
				t.Fatal("no answer")
			}
			if from.String() != "10.213.0.1:67" {
				t.Errorf("reply from %v, want 10.213.0.1:67", from)
			}
			checkPXEReply(t, rp, tt.rq, tt.wantType, tt.wantFile, vendorPXEClient)
			if !rp.YourIPAddr.Equal(net.IPv4zero) {
				t.Errorf("proxy yiaddr %v", rp.YourIPAddr)
			}
		})
	}
	st := srv.Stats()
	if st.Received != st.Answered+st.Ignored+st.Malformed+st.Errors || st.Answered != 4 || st.Malformed != 3 {
		t.Fatalf("final counters %+v: want 4 answered, 3 malformed, all accounted for", st)
	}
}

func TestFullDHCPBroadcastNetns(t *testing.T) {
	n := newTestNet(t)
	leases := &MemLeases{}
	srv := newTestDHCP(t, DHCPConfig{Mode: ModeFull, Interface: srvIf, Full: FullDHCP{
		RangeStart: net.IPv4(10, 213, 0, 100), RangeEnd: net.IPv4(10, 213, 0, 150),
		Netmask: net.CIDRMask(24, 32), Router: net.IPv4(10, 213, 0, 1), LeaseTime: time.Hour, Leases: leases,
	}})
	startInNetns(t, n, srv)
	c := dhcpClient(t, n)

	d := pxeReq(msgDiscover, macUEFI, 7)
	var offer *dhcpv4.DHCPv4
	for i := 0; offer == nil; i++ { // the first DISCOVER may beat the server's bind
		if i == 50 {
			t.Fatal("no offer")
		}
		if _, err := c.WriteTo(d.bytes(), bcast67); err != nil {
			t.Fatal(err)
		}
		offer, _ = readReply(t, c, d.xid, 100*time.Millisecond)
	}
	checkPXEReply(t, offer, d, msgOffer, "ipxe.efi", vendorPXEClient)
	if !offer.YourIPAddr.Equal(net.IPv4(10, 213, 0, 100)) {
		t.Fatalf("offered %v, want 10.213.0.100", offer.YourIPAddr)
	}
	r := pxeReq(msgRequest, macUEFI, 7)
	r.xid, r.serverID, r.requested = 0x2222, testServerIP, offer.YourIPAddr
	if _, err := c.WriteTo(r.bytes(), bcast67); err != nil {
		t.Fatal(err)
	}
	ack, _ := readReply(t, c, r.xid, 2*time.Second)
	if ack == nil {
		t.Fatal("no ack")
	}
	checkPXEReply(t, ack, r, msgAck, "ipxe.efi", vendorPXEClient)
	if !ack.YourIPAddr.Equal(offer.YourIPAddr) {
		t.Fatalf("ack yiaddr %v", ack.YourIPAddr)
	}
	l, ok, _ := leases.Get(context.Background(), macUEFI)
	if !ok || !l.IP.Equal(offer.YourIPAddr) || time.Until(l.Expires) < 59*time.Minute {
		t.Fatalf("lease %+v ok=%v", l, ok)
	}
}

// servePXEPort runs the port-4011 service on a loopback socket.
func servePXEPort(t testing.TB, srv *ProxyDHCP) *net.UDPAddr {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.serve(ctx, conn, svcPXE) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return conn.LocalAddr().(*net.UDPAddr)
}

func TestProxyDHCPPort4011Loopback(t *testing.T) {
	srv := newTestDHCP(t, DHCPConfig{})
	addr := servePXEPort(t, srv)
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	ipxeReq := pxeReq(msgRequest, macBIOS, 0)
	ipxeReq.userClass, ipxeReq.ciaddr, ipxeReq.xid = "iPXE", net.IPv4(127, 0, 0, 1), 0x4011
	firmware := pxeReq(msgRequest, macUEFI, 7)
	firmware.ciaddr, firmware.xid = net.IPv4(127, 0, 0, 1), 0x4012
	unknown := pxeReq(msgRequest, macUnknown, 0)
	unknown.xid = 0x4013
	for _, tt := range []struct {
		name     string
		rq       req
		wantFile string
	}{
		{"ipxe ProxyDHCPREQUEST", ipxeReq, "http://10.213.0.1:8081/boot/52:54:00:aa:00:01.ipxe"},
		{"firmware request", firmware, "ipxe.efi"},
		{"unknown mac", unknown, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.WriteTo(tt.rq.bytes(), addr); err != nil {
				t.Fatal(err)
			}
			wait := 2 * time.Second
			if tt.wantFile == "" {
				wait = 300 * time.Millisecond
			}
			rp, from := readReply(t, c, tt.rq.xid, wait)
			if tt.wantFile == "" {
				if rp != nil {
					t.Fatalf("answered an unknown MAC: %v", rp.MessageType())
				}
				return
			}
			if rp == nil {
				t.Fatal("no ACK")
			}
			if from.Port != addr.Port {
				t.Errorf("ACK from port %d, want %d", from.Port, addr.Port)
			}
			checkPXEReply(t, rp, tt.rq, msgAck, tt.wantFile, vendorPXEClient)
			if !rp.ClientIPAddr.Equal(tt.rq.ciaddr) {
				t.Errorf("ACK ciaddr %v, want %v", rp.ClientIPAddr, tt.rq.ciaddr)
			}
		})
	}
	st := waitHandled(t, srv, 3)
	if st.Answered != 2 || st.Ignored != 1 {
		t.Fatalf("counters %+v, want 2 answered and 1 ignored", st)
	}
}

func TestStartModeOffReturns(t *testing.T) {
	srv := newTestDHCP(t, DHCPConfig{Mode: ModeOff})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("Start(off): %v", err)
	}
}

func TestStartStopsWithContext(t *testing.T) {
	n := newTestNet(t)
	srv := newTestDHCP(t, DHCPConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inNetns(n.srvNS, func() error { return srv.Start(ctx) }) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Start did not return after cancel")
	}
	// A bad interface fails loudly instead of serving the wrong network.
	bad := newTestDHCP(t, DHCPConfig{Interface: "nonexistent0"})
	err := inNetns(n.srvNS, func() error { return bad.Start(context.Background()) })
	if err == nil {
		t.Fatal("Start bound to a missing interface")
	}
}
