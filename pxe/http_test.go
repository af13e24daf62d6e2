package pxe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newBootServer(t *testing.T, d Decider) (*httptest.Server, string) {
	t.Helper()
	dir := t.TempDir()
	kernel := bytes.Repeat([]byte("K"), 100_000)
	for i := range kernel {
		kernel[i] = byte(i * 7)
	}
	must(t, os.WriteFile(filepath.Join(dir, "vmlinuz"), kernel, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "initramfs.cpio.gz"), []byte("initramfs"), 0o644))
	must(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "sub", "x"), []byte("nested"), 0o644))
	secret := filepath.Join(t.TempDir(), "secret")
	must(t, os.WriteFile(secret, []byte("secret"), 0o644))
	must(t, os.Symlink(secret, filepath.Join(dir, "escape")))
	h, err := NewBootHandler(BootConfig{
		Decider:  d,
		AgentURL: "http://10.213.0.1:8081",
		BaseURL:  "http://10.213.0.1:8081/",
		BootDir:  dir,
		Logger:   testLogger(t),
	})
	if err != nil {
		t.Fatalf("NewBootHandler: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func testDecider() Decider {
	return DeciderFunc(func(_ context.Context, mac net.HardwareAddr) (Decision, error) {
		switch mac.String() {
		case "52:54:00:aa:00:01":
			return Decision{Action: ActionInstall, TaskID: testTask, Token: testToken}, nil
		case "52:54:00:aa:00:02":
			return Decision{Action: ActionLocal}, nil
		case "52:54:00:aa:00:03":
			return Decision{Action: ActionDiscover}, nil
		case "52:54:00:aa:00:04":
			return Decision{Action: ActionInstall, TaskID: testTask, Token: "bad token;reboot"}, nil
		case "52:54:00:aa:00:05":
			return Decision{}, errors.New("etcd down")
		}
		return Decision{}, fmt.Errorf("mac %s: %w", mac, ErrUnknownMachine)
	})
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	rq, err := http.NewRequest(http.MethodGet, url, nil)
	must(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		rq.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(rq)
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	return resp, string(b)
}

func TestBootHandlerScripts(t *testing.T) {
	srv, _ := newBootServer(t, testDecider())
	tests := []struct {
		path     string
		code     int
		contains []string
		absent   []string
	}{
		{"/boot/52:54:00:aa:00:01.ipxe", 200, []string{"#!ipxe\n", "lpmos_task=" + testTask, "lpmos_token=" + testToken,
			"kernel http://10.213.0.1:8081/boot/files/vmlinuz initrd=initrd ",
			"initrd --name initrd http://10.213.0.1:8081/boot/files/initramfs.cpio.gz"}, nil},
		{"/boot/52-54-00-AA-00-01.ipxe", 200, []string{"lpmos_task=" + testTask}, nil},
		{"/boot/52:54:00:aa:00:02.ipxe", 200, []string{"#!ipxe\n", "\nexit 1\n"}, []string{"kernel"}},
		{"/boot/52:54:00:aa:00:03.ipxe", 200, []string{"lpmos_client=http://10.213.0.1:8081 lpmos_mac=${mac}"}, []string{"lpmos_task", "lpmos_token"}},
		{"/boot/52:54:00:aa:00:04.ipxe", 500, nil, []string{"reboot;", "bad token"}},
		{"/boot/52:54:00:aa:00:05.ipxe", 500, nil, []string{"etcd"}},
		{"/boot/52:54:00:aa:00:99.ipxe", 404, nil, nil},
		{"/boot/not-a-mac.ipxe", 400, nil, nil},
		{"/boot/00:11:22:33:44:55:66:77.ipxe", 400, nil, nil},
		{"/boot/52:54:00:aa:00:01.txt", 404, nil, nil},
		{"/boot/", 404, nil, nil},
	}
	for _, tt := range tests {
		t.Run(strings.TrimPrefix(tt.path, "/boot/"), func(t *testing.T) {
			resp, body := get(t, srv.URL+tt.path)
			if resp.StatusCode != tt.code {
				t.Fatalf("status %d, want %d; body %q", resp.StatusCode, tt.code, body)
			}
			for _, c := range tt.contains {
				if !strings.Contains(body, c) {
					t.Errorf("body lacks %q:\n%s", c, body)
				}
			}
			for _, c := range tt.absent {
				if strings.Contains(body, c) {
					t.Errorf("body contains %q:\n%s", c, body)
				}
			}
			if tt.code == 200 && !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
				t.Errorf("content type %q", resp.Header.Get("Content-Type"))
			}
		})
	}
}

func TestBootHandlerFiles(t *testing.T) {
	srv, dir := newBootServer(t, testDecider())
	kernel, err := os.ReadFile(filepath.Join(dir, "vmlinuz"))
	must(t, err)

	t.Run("whole kernel", func(t *testing.T) {
		resp, body := get(t, srv.URL+"/boot/files/vmlinuz")
		if resp.StatusCode != 200 || body != string(kernel) {
			t.Fatalf("status %d, %d bytes; want 200, %d bytes", resp.StatusCode, len(body), len(kernel))
		}
		if resp.Header.Get("Accept-Ranges") != "bytes" {
			t.Errorf("Accept-Ranges %q", resp.Header.Get("Accept-Ranges"))
		}
	})
	t.Run("range resume", func(t *testing.T) {
		resp, body := get(t, srv.URL+"/boot/files/vmlinuz", "Range", "bytes=99990-")
		if resp.StatusCode != http.StatusPartialContent || body != string(kernel[99990:]) {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		if cr := resp.Header.Get("Content-Range"); cr != "bytes 99990-99999/100000" {
			t.Errorf("Content-Range %q", cr)
		}
	})
	t.Run("nested file", func(t *testing.T) {
		if resp, body := get(t, srv.URL+"/boot/files/sub/x"); resp.StatusCode != 200 || body != "nested" {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
	})
	for _, p := range []string{
		"/boot/files/", "/boot/files/sub", "/boot/files/sub/", "/boot/files/missing",
		"/boot/files/escape", "/boot/files/..%2f..%2fetc%2fpasswd", "/boot/files/%2e%2e/secret",
		"/boot/files/../../etc/passwd",
	} {
		t.Run("refused "+p, func(t *testing.T) {
			resp, body := get(t, srv.URL+p)
			if resp.StatusCode == 200 {
				t.Fatalf("status 200 for %s: %q", p, body)
			}
			if strings.Contains(body, "secret") || strings.Contains(body, "root:") || strings.Contains(body, "vmlinuz") {
				t.Fatalf("leaked content for %s: %q", p, body)
			}
		})
	}
}

func TestBootHandlerIPXEBinaries(t *testing.T) {
	srv, _ := newBootServer(t, testDecider())
	want, err := fs.ReadFile(IPXEFiles(), FileUEFI)
	must(t, err)
	resp, body := get(t, srv.URL+"/boot/ipxe/ipxe.efi")
	if resp.StatusCode != 200 || body != string(want) {
		t.Fatalf("ipxe.efi: status %d, %d bytes, want %d", resp.StatusCode, len(body), len(want))
	}
	for _, p := range []string{"/boot/ipxe/VERSION", "/boot/ipxe/COPYING.ipxe", "/boot/ipxe/nope.efi", "/boot/ipxe/"} {
		if resp, _ := get(t, srv.URL+p); resp.StatusCode != 404 {
			t.Errorf("%s: status %d, want 404", p, resp.StatusCode)
		}
	}
}

func TestNewBootHandlerValidates(t *testing.T) {
	ok := BootConfig{Decider: testDecider(), AgentURL: "http://10.0.0.1:8081", BaseURL: "http://10.0.0.1:8081", BootDir: t.TempDir()}
	tests := map[string]func(*BootConfig){
		"no decider":       func(c *BootConfig) { c.Decider = nil },
		"bad agent url":    func(c *BootConfig) { c.AgentURL = "http://x y" },
		"bad base url":     func(c *BootConfig) { c.BaseURL = "10.0.0.1:8081" },
		"no boot dir":      func(c *BootConfig) { c.BootDir = "" },
		"kernel escapes":   func(c *BootConfig) { c.Kernel = "../vmlinuz" },
		"bad extra arg":    func(c *BootConfig) { c.ExtraArgs = []string{"init=/bin/sh;x"} },
		"initrd absolute":  func(c *BootConfig) { c.Initrd = "/initrd" },
		"kernel with meta": func(c *BootConfig) { c.Kernel = "vmlinuz${x}" },
	}
	if _, err := NewBootHandler(ok); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, mut := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := ok
			mut(&cfg)
			if _, err := NewBootHandler(cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
