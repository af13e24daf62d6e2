package app_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/app"
)

// startServeHTTPS starts `lpmos serve` with the default control plane
// (HTTPS, certificate from the cluster CA) and waits until it answers over
// HTTPS with that CA trusted; p.url is https://localhost:<port>.
func startServeHTTPS(t *testing.T, dir string) (*lpmosProc, *x509.CertPool) {
	t.Helper()
	args, url, ports := serveArgs(t, dir)
	args = slices.DeleteFunc(args, func(a string) bool { return a == "--tls=off" })
	p := &lpmosProc{dataDir: dir, url: strings.Replace(url, "http://127.0.0.1", "https://localhost", 1), ports: ports}
	spawn(t, "lpmos", p, args)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(filepath.Join(dir, "pki", "ca.crt")); err == nil {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(data) {
				t.Fatal("pki/ca.crt holds no certificate")
			}
			hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
			if resp, err := hc.Get(p.url + "/api/v1/health"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return p, pool
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("lpmos not healthy over HTTPS within 30s")
	return nil, nil
}

// TestServeHTTPSByDefault: without any TLS flag the control plane serves
// HTTPS with a certificate from the cluster CA (chain and SANs checked by
// a raw TLS client), its key is 0600, the log names the URL and the CA,
// a plain-HTTP request is refused with a clear answer, and the CLI works
// on the node with no flag and elsewhere with --ca-cert (without it, the
// error names the flag).
func TestServeHTTPSByDefault(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, pool := startServeHTTPS(t, dir)
	port := p.ports[0]

	// The chain and the SANs, with a raw TLS client.
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS to the control plane with the cluster CA: %v", err)
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	host, _ := os.Hostname()
	for _, h := range []string{"localhost", "127.0.0.1", "::1", host} {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("serving certificate does not cover %q: %v (DNS %v, IP %v)", h, err, leaf.DNSNames, leaf.IPAddresses)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("serving certificate does not chain to pki/ca.crt: %v", err)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > 100*24*time.Hour {
		t.Errorf("serving certificate lives %s: want a short-lived one that gets renewed", life)
	}
	// The served certificate is the one on disk; its key is private.
	crt, err := os.ReadFile(filepath.Join(dir, "pki", "serving.crt"))
	if err != nil || !strings.Contains(string(crt), "BEGIN CERTIFICATE") {
		t.Fatalf("pki/serving.crt: %v", err)
	}
	if info, err := os.Stat(filepath.Join(dir, "pki", "serving.key")); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("pki/serving.key: %v, mode %v; want 0600", err, info.Mode().Perm())
	}
	// Without the CA a client refuses the certificate.
	if _, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{ServerName: "localhost"}); err == nil {
		t.Error("a client without the cluster CA accepted the serving certificate")
	}
	log := p.logText()
	for _, want := range []string{fmt.Sprintf("https://127.0.0.1:%d", port), filepath.Join(dir, "pki", "ca.crt")} {
		if !strings.Contains(log, want) {
			t.Errorf("startup log does not say %q", want)
		}
	}

	// Plain HTTP to the HTTPS port: a clear refusal.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/health", port))
	if err != nil {
		t.Fatalf("plain HTTP to the HTTPS port: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTPS") {
		t.Errorf("plain HTTP to the HTTPS port: %d %q, want 400 naming HTTPS", resp.StatusCode, body)
	}

	// The CLI on the node: no flag (CA and token from the data dir).
	if out, err := p.cli(t, "task", "list", "-o", "json"); err != nil || !strings.HasPrefix(strings.TrimSpace(out), "[") {
		t.Fatalf("lpmos task list on the node: %v %q", err, out)
	}
	// Elsewhere: without the CA the error names the flag; with it, it works.
	elsewhere := t.TempDir()
	run := func(extra ...string) (string, error) {
		return p.cliIn(t, elsewhere, append([]string{"task", "list", "-o", "json", "--token", p.token(t)}, extra...)...)
	}
	if _, err := run(); err == nil || !strings.Contains(err.Error(), "--ca-cert") {
		t.Errorf("CLI without the CA: %v, want an error naming --ca-cert", err)
	}
	if out, err := run("--ca-cert", filepath.Join(dir, "pki", "ca.crt")); err != nil || !strings.HasPrefix(strings.TrimSpace(out), "[") {
		t.Errorf("CLI with --ca-cert: %v %q", err, out)
	}
	// LPMOS_CA_CERT in the environment of an lpmos process (t.Setenv would
	// keep this test from running in parallel).
	if _, errOut, code := runLpmosEnv(t, []string{"LPMOS_CA_CERT=" + filepath.Join(dir, "pki", "ca.crt")}, 30*time.Second,
		"task", "list", "-o", "json", "--token", p.token(t), "--server", p.url, "--data-dir", elsewhere); code != 0 {
		t.Errorf("CLI with LPMOS_CA_CERT: exit %d %s", code, errOut)
	}
	if _, err := run("--ca-cert", filepath.Join(dir, "admin.token")); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("CLI with a --ca-cert that is no certificate: %v", err)
	}

	// A restart keeps the certificate (still good) instead of reissuing.
	p.stop(t)
	p2 := &lpmosProc{dataDir: dir, url: p.url, ports: p.ports}
	args := slices.DeleteFunc(append([]string{}, p.cmd.Args[1:]...), func(a string) bool { return a == "--tls=off" })
	spawn(t, "lpmos-2", p2, args)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{RootCAs: pool, ServerName: "localhost"})
		if err == nil {
			again := c.ConnectionState().PeerCertificates[0]
			c.Close()
			if !again.Equal(leaf) {
				t.Error("a restart reissued a certificate that was still good")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted lpmos does not answer TLS: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	p2.stop(t)
}

// TestServeTLSFlags: --tls takes on or off; off with a certificate is a
// contradiction refused before anything starts.
func TestServeTLSFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad value", []string{"--tls", "maybe"}, `--tls "maybe": use on`},
		{"off with cert", []string{"--tls=off", "--tls-cert", "x.crt", "--tls-key", "x.key"}, "--tls=off with --tls-cert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			args, _, _ := serveArgs(t, dir)
			args = slices.DeleteFunc(args, func(a string) bool { return a == "--tls=off" })
			var o, e bytes.Buffer
			root := app.NewRoot("test", &o, &e)
			root.SetArgs(append(args, tc.args...))
			if err := root.Execute(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("serve %v: %v; want failure saying %q", tc.args, err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "etcd")); err == nil {
				t.Error("a refused start left an etcd dir behind")
			}
		})
	}
}

// cliIn runs an lpmos CLI command in process against p with another data dir.
func (p *lpmosProc) cliIn(t *testing.T, dataDir string, args ...string) (string, error) {
	t.Helper()
	return (&lpmosProc{url: p.url, dataDir: dataDir}).cli(t, args...)
}

// waitHTTPS polls url/api/v1/health over HTTPS, trusting the CA in caFile
// once it exists, until it answers 200.
func waitHTTPS(t *testing.T, url, caFile string, within time.Duration) *x509.CertPool {
	t.Helper()
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		data, err := os.ReadFile(caFile)
		if err == nil {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(data)
			hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
			resp, err := hc.Get(url + "/api/v1/health")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return pool
				}
			}
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not healthy over HTTPS within %s: %v", url, within, last)
	return nil
}

// TestJoinedMemberServesHTTPS: a member that joined an HTTPS cluster (the
// join URL is https) serves its own control plane over HTTPS with a
// certificate from the same cluster CA, so the CA file of the first member
// verifies both, and the CLI on the joined node works without a flag.
func TestJoinedMemberServesHTTPS(t *testing.T) {
	t.Parallel()
	nodes := []*clusterNode{newClusterNode(t, "m1"), newClusterNode(t, "m2")}
	for _, n := range nodes {
		n.flags = slices.DeleteFunc(n.flags, func(a string) bool { return a == "--tls=off" })
		n.url = strings.Replace(n.url, "http://127.0.0.1", "https://localhost", 1)
	}
	m1, m2 := nodes[0], nodes[1]
	m1.run(t, "serve")
	ca1 := filepath.Join(m1.dataDir, "pki", "ca.crt")
	waitHTTPS(t, m1.url, ca1, 30*time.Second)
	tok := joinToken(t, m1)
	m2.run(t, "join", m1.url, "--token", tok, "--name", "m2", "--region-id", "dc2")
	waitHTTPS(t, m2.url, ca1, 40*time.Second)
	if !pkiSame(t, ca1, filepath.Join(m2.dataDir, "pki", "ca.crt")) {
		t.Fatal("the joined member's pki/ca.crt is not the cluster CA")
	}
	admin := m1.token(t)
	if out, errOut, err := cliIn("task", "list", "-o", "json", "--server", m2.url, "--data-dir", m2.dataDir, "--token", admin); err != nil {
		t.Fatalf("CLI on the joined node: %v %s %s", err, out, errOut)
	}
}

func pkiSame(t *testing.T, a, b string) bool {
	t.Helper()
	da, err1 := os.ReadFile(a)
	db, err2 := os.ReadFile(b)
	if err1 != nil || err2 != nil {
		t.Fatalf("read CA files: %v %v", err1, err2)
	}
	return bytes.Equal(bytes.TrimSpace(da), bytes.TrimSpace(db))
}
