package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/lpmos/lpmos/store"
)

// agentTLSOn reads --agent-tls.
func (o *regionalOptions) agentTLSOn() (bool, error) {
	switch strings.ToLower(o.agentTLS) {
	case "", "on", "true", "1":
		return true, nil
	case "off", "false", "0":
		return false, nil
	}
	return false, fmt.Errorf("--agent-tls %q: want on or off (LPMOS_AGENT_TLS)", o.agentTLS)
}

// apiListenAddr is the agent API's listen address: --api-bind (an IP
// address) and --api-port.
func (o *regionalOptions) apiListenAddr(port int) (string, error) {
	if o.apiBind == "" {
		return fmt.Sprintf(":%d", port), nil
	}
	if net.ParseIP(o.apiBind) == nil {
		return "", fmt.Errorf("--api-bind %q: want an IP address of this host (the port is --api-port)", o.apiBind)
	}
	return net.JoinHostPort(o.apiBind, fmt.Sprint(port)), nil
}

type agentTLSConfig struct {
	cert  *tls.Certificate
	pin   string
	hosts []string
}

// issueAgentTLS issues the agent API's serving certificate from the
// cluster CA for the advertise IP, the public URL's host and the hostname,
// living lifetime. It is issued afresh on every start and renewed while
// the region runs (app/agentcert.go).
func issueAgentTLS(ctx context.Context, st *store.Store, member string, ip net.IP, publicURL string, lifetime time.Duration) (agentTLSConfig, error) {
	hosts := []string{ip.String()}
	if u, err := url.Parse(publicURL); err == nil && u.Hostname() != "" && u.Hostname() != ip.String() {
		hosts = append(hosts, u.Hostname())
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	cert, pin, err := st.IssueAgentAPICertFor(ctx, member+"-agent-api", hosts, lifetime)
	if errors.Is(err, store.ErrNotEmbedded) {
		return agentTLSConfig{}, errors.New("--agent-tls=on needs the cluster CA, which only an embedded etcd member has: run the region on a member, or pass --agent-tls=off")
	}
	if err != nil {
		return agentTLSConfig{}, err
	}
	return agentTLSConfig{cert: cert, pin: pin, hosts: hosts}, nil
}
