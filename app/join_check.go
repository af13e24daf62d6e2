package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/lpmos/lpmos/internal/pki"
	"github.com/lpmos/lpmos/store"
)

// joinPreflight checks every flag of `lpmos join` and binds (then
// releases) every TCP port the member will serve on, before the cluster is
// asked to admit it: a typo or a busy port then costs nothing.
func joinPreflight(o serveOptions) error {
	r, err := parseRoles(o.role)
	if err != nil {
		return err
	}
	if err := o.checkEtcdSpace(); err != nil {
		return err
	}
	if err := o.checkMemberCertTTL(); err != nil { // app/membercerts.go
		return err
	}
	if _, err := o.imagePolicy(); err != nil {
		return err
	}
	if !validMemberName(o.name) {
		return fmt.Errorf("--name %q: use letters, digits, '.', '-' or '_' (at most 64)", o.name)
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together: give both or neither")
	}
	if o.tlsCert != "" {
		if _, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey); err != nil {
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
	}
	peer, err := memberURL("--peer-url", o.etcdPeerURL)
	if err != nil {
		return err
	}
	client, err := memberURL("--client-url", o.etcdClientURL)
	if err != nil {
		return err
	}
	type bind struct{ flag, addr string }
	binds := []bind{{"--peer-url", peer.Host}, {"--client-url", client.Host}}
	if h := client.Hostname(); h != "127.0.0.1" && h != "localhost" && h != "0.0.0.0" && h != "::" {
		binds = append(binds, bind{"--client-url (its loopback listener)", net.JoinHostPort("127.0.0.1", client.Port())})
	}
	if r.controlPlane {
		binds = append(binds, bind{"--listen-addr", o.listenAddr})
	}
	if r.regional {
		if o.apiPort < 1 || o.apiPort > 65535 {
			return fmt.Errorf("--api-port %d: use a port between 1 and 65535", o.apiPort)
		}
		binds = append(binds, bind{"--api-port", net.JoinHostPort(o.regional.apiBind, strconv.Itoa(o.apiPort))})
	}
	seen := map[string]string{}
	for _, b := range binds {
		if other, dup := seen[b.addr]; dup {
			return fmt.Errorf("%s and %s both want %s: give each its own port", other, b.flag, b.addr)
		}
		seen[b.addr] = b.flag
		if err := tryListen(b.addr); err != nil {
			return fmt.Errorf("%s: %s cannot be used: %w (fix the flag or free the port; nothing was sent to the cluster)", b.flag, b.addr, err)
		}
	}
	return nil
}

// tryListen binds addr and releases it at once.
func tryListen(addr string) error {
	if _, port, err := net.SplitHostPort(addr); err != nil {
		return err
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a port number (0-65535)", port)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return l.Close()
}

func memberURL(flag, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("%s %q: want https://HOST:PORT (members always talk mutual TLS)", flag, raw)
	}
	if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("%s %q: the port must be between 1 and 65535", flag, raw)
	}
	return u, nil
}

func validMemberName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
		default:
			return false
		}
	}
	return true
}

// abortJoin takes back the add of a join that failed on this side after
// the cluster admitted it (best effort, logged), and removes what the join
// wrote in the data dir, so the same join can simply be run again.
func abortJoin(ctx context.Context, hc *http.Client, server string, req store.JoinRequest, memberID, dataDir string, cause error, log *slog.Logger) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var m store.Member
	err := joinCall(actx, hc, "POST", server+"/api/v1/cluster/join/abort", store.AbortJoinRequest{JoinRequest: req, MemberID: memberID}, &m)
	if err != nil {
		log.Error("the join failed after the cluster admitted this member, and taking the add back failed too: remove it with `lpmos member remove "+memberID+"`",
			"member_id", memberID, "cause", cause, "error", err)
	} else {
		log.Warn("the join failed after the cluster admitted this member: the member was removed again, the cluster is as it was",
			"member_id", memberID, "cause", cause)
	}
	pdir := pki.Dir(filepath.Join(dataDir, "pki"))
	for _, p := range []string{pdir.Path(pki.MemberKeyFile), pdir.Path(pki.MemberCertFile), pdir.Path(pki.CACertFile), filepath.Join(dataDir, memberFileName)} {
		_ = os.Remove(p)
	}
	if err == nil {
		_ = os.RemoveAll(filepath.Join(dataDir, "etcd"))
	}
}
