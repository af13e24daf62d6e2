package pxe

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pin/tftp/v3"

	"github.com/lpmos/lpmos/internal/testenv"
)

// startTFTP serves the embedded iPXE set on a loopback port and stops it at
// the end of the test.
func startTFTP(t testing.TB) string {
	t.Helper()
	addr, _, _ := startTFTPConfig(t, TFTPConfig{Timeout: time.Second})
	return addr
}

func tftpClient(t testing.TB, addr string, blksize int, tsize bool) *tftp.Client {
	t.Helper()
	c, err := tftp.NewClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(time.Second)
	c.SetRetries(2)
	if blksize > 0 {
		c.SetBlockSize(blksize)
	}
	c.RequestTSize(tsize)
	return c
}

func TestTFTPDownload(t *testing.T) {
	addr := startTFTP(t)
	for _, name := range IPXEBinaries() {
		want, err := fs.ReadFile(IPXEFiles(), name)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			blksize int
			tsize   bool
		}{{0, false}, {1468, true}, {8192, true}} {
			t.Run(fmt.Sprintf("%s/blksize=%d/tsize=%v", name, tc.blksize, tc.tsize), func(t *testing.T) {
				wt, err := tftpClient(t, addr, tc.blksize, tc.tsize).Receive(name, "octet")
				if err != nil {
					t.Fatalf("RRQ %s: %v", name, err)
				}
				if tc.tsize {
					n, ok := wt.(tftp.IncomingTransfer).Size()
					if !ok || n != int64(len(want)) {
						t.Errorf("tsize %d (ok=%v), want %d", n, ok, len(want))
					}
				}
				var got bytes.Buffer
				if _, err := wt.WriteTo(&got); err != nil {
					t.Fatalf("transfer %s: %v", name, err)
				}
				if !bytes.Equal(got.Bytes(), want) {
					t.Fatalf("%s: got %d bytes, differ from the embedded %d bytes", name, got.Len(), len(want))
				}
			})
		}
	}
}

func TestTFTPRefuses(t *testing.T) {
	addr := startTFTP(t)
	for _, name := range []string{
		"../etc/passwd", "/etc/passwd", "/undionly.kpxe", "ipxe/undionly.kpxe", "./undionly.kpxe",
		"undionly.kpxe/", "VERSION", "COPYING.ipxe", "nope.efi", "", "UNDIONLY.KPXE",
	} {
		t.Run(name, func(t *testing.T) {
			wt, err := tftpClient(t, addr, 0, false).Receive(name, "octet")
			if err == nil {
				var b bytes.Buffer
				wt.WriteTo(&b)
				t.Fatalf("RRQ %q was served (%d bytes)", name, b.Len())
			}
			if !strings.Contains(err.Error(), "not found") {
				t.Fatalf("RRQ %q: error %v, want a TFTP 'file not found' error packet", name, err)
			}
		})
	}
	t.Run("write request", func(t *testing.T) {
		rf, err := tftpClient(t, addr, 0, false).Send("undionly.kpxe", "octet")
		if err == nil {
			_, err = rf.ReadFrom(bytes.NewReader([]byte("evil")))
		}
		if err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Fatalf("WRQ: error %v, want the server's read-only error packet", err)
		}
		// The file is unchanged.
		wt, err := tftpClient(t, addr, 0, false).Receive("undionly.kpxe", "octet")
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		wt.WriteTo(&got)
		want, _ := fs.ReadFile(IPXEFiles(), "undionly.kpxe")
		if !bytes.Equal(got.Bytes(), want) {
			t.Fatal("undionly.kpxe changed after a write request")
		}
	})
}

// TestTFTPCurl fetches with another implementation's client: curl.
func TestTFTPCurl(t *testing.T) {
	curl := testenv.RequireTool(t, "curl", "curl")
	addr := startTFTP(t)
	want, _ := fs.ReadFile(IPXEFiles(), FileBIOS)
	for _, args := range [][]string{nil, {"--tftp-blksize", "1468"}} {
		out := filepath.Join(t.TempDir(), "undionly.kpxe")
		cmd := exec.Command(curl, append(args, "-sS", "--max-time", "20", "-o", out, "tftp://"+addr+"/undionly.kpxe")...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, b)
		}
		got, err := os.ReadFile(out)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("curl %v: %d bytes (err %v), want the embedded %d bytes", args, len(got), err, len(want))
		}
	}
	// curl exits non-zero on the server's error packet.
	cmd := exec.Command(curl, "-sS", "--max-time", "20", "-o", filepath.Join(t.TempDir(), "x"), "tftp://"+addr+"/..%2Fetc%2Fpasswd")
	if b, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("curl fetched ../etc/passwd: %s", b)
	}
}

func TestNewTFTPNeedsBinaries(t *testing.T) {
	if _, err := NewTFTP(TFTPConfig{Files: os.DirFS(t.TempDir())}); err == nil {
		t.Fatal("NewTFTP accepted an empty file set")
	}
}
