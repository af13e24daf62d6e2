package pxe

import (
	"net"
	"slices"
	"testing"
	"time"
)

// BenchmarkProxyDHCPReply measures one iPXE ProxyDHCPREQUEST -> ACK round
// trip over a loopback socket on the port-4011 path (parse, Machines lookup,
// boot decision, encode, send), reporting p50/p99 latency.
//
//	go test ./pxe -run '^$' -bench ProxyDHCPReply -benchtime 20000x
func BenchmarkProxyDHCPReply(b *testing.B) {
	srv := newTestDHCP(b, DHCPConfig{})
	addr := servePXEPort(b, srv)
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	rq := pxeReq(msgRequest, macBIOS, 0)
	rq.userClass, rq.ciaddr = "iPXE", net.IPv4(127, 0, 0, 1)
	buf := make([]byte, 1500)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rq.xid = uint32(i + 1)
		pkt := rq.bytes()
		start := time.Now()
		if _, err := c.WriteTo(pkt, addr); err != nil {
			b.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		for {
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				b.Fatalf("request %d: %v", i, err)
			}
			// xid is bytes 4..7; skip a late reply to an earlier request.
			if n >= 8 && uint32(buf[4])<<24|uint32(buf[5])<<16|uint32(buf[6])<<8|uint32(buf[7]) == rq.xid {
				break
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(float64(len(lat)-1)*p)].Microseconds()) }
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	if st := waitHandled(b, srv, uint64(b.N)); st.Answered != uint64(b.N) {
		b.Fatalf("answered %d of %d", st.Answered, b.N)
	}
}

// BenchmarkRespond is the handler alone, without sockets.
func BenchmarkRespond(b *testing.B) {
	srv := newTestDHCP(b, DHCPConfig{})
	pkt := pxeReq(msgDiscover, macUEFI, 7).bytes()
	peer := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 68}
	b.ReportAllocs()
	for b.Loop() {
		res := srv.respond(b.Context(), pkt, peer, svcDHCP)
		if res.reply == nil {
			b.Fatal("no reply")
		}
		_ = res.reply.ToBytes()
	}
}
