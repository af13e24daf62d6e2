package pxe

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// TestTFTPStatsCountOutcomes: a served file counts as sent, an unknown
// name and a write request as refused (lpmos_tftp_transfers_total).
func TestTFTPStatsCountOutcomes(t *testing.T) {
	addr, srv, _ := startTFTPConfig(t, TFTPConfig{Timeout: time.Second})

	// A UEFI-style size probe (tsize, then ERROR 8 after the OACK) is
	// neither sent nor failed (it ends before the download below).
	c := newRawClient(t, addr)
	c.sendServer(rrq("undionly.kpxe", "octet", "tsize", "0"))
	if p := c.mustRecv(); binary.BigEndian.Uint16(p) != tftpOACK {
		t.Fatalf("got %q, want an OACK", p)
	}
	c.sendPeer(appendTFTPError(nil, tftpErrOptionRefuse, "User aborted the transfer"))

	wt, err := tftpClient(t, addr, 0, false).Receive("undionly.kpxe", "octet")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := wt.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	if _, err := tftpClient(t, addr, 0, false).Receive("nope.efi", "octet"); err == nil {
		t.Fatal("nope.efi served")
	}
	if rf, err := tftpClient(t, addr, 0, false).Send("undionly.kpxe", "octet"); err == nil {
		_, _ = rf.ReadFrom(bytes.NewReader([]byte("x")))
	}
	want := TFTPStats{Sent: 1, Refused: 2}
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats() != want {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want %+v", srv.Stats(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
