package pxe

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkTFTPFile downloads undionly.kpxe (blksize 512, 145 blocks)
// from the server over loopback, one file per op, with a minimal client
// that allocates nothing per block: allocs/op and B/op are the server's.
//
//	go test -run '^$' -bench BenchmarkTFTPFile -benchmem ./pxe/
func BenchmarkTFTPFile(b *testing.B) {
	addr, _, _ := startTFTPConfig(b, TFTPConfig{Timeout: 2 * time.Second})
	server, err := netip.ParseAddrPort(addr)
	if err != nil {
		b.Fatal(err)
	}

	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := append([]byte{0, 1}, FileBIOS+"\x00octet\x00"...) // self-contained: runs on older trees too
	buf := make([]byte, 600)
	ackb := make([]byte, 4)
	ackb[1] = 4 // ACK
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.WriteToUDPAddrPort(req, server); err != nil {
			b.Fatal(err)
		}
		var peer netip.AddrPort
		for {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				b.Fatal(err)
			}
			if n < 4 || binary.BigEndian.Uint16(buf) != 3 /* DATA */ {
				b.Fatalf("got % x", buf[:n])
			}
			peer = from
			copy(ackb[2:], buf[2:4])
			if _, err := c.WriteToUDPAddrPort(ackb, peer); err != nil {
				b.Fatal(err)
			}
			if n < 516 {
				break
			}
		}
	}
}
