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
// cluster CA for the advertise IP, the public URL's host and the hostname.
// It is issued afresh on every start (5-year lifetime, like member
// certificates).
func issueAgentTLS(ctx context.Context, st *store.Store, member string, ip net.IP, publicURL string) (agentTLSConfig, error) {
	hosts := []string{ip.String()}
	if u, err := url.Parse(publicURL); err == nil && u.Hostname() != "" && u.Hostname() != ip.String() {
		hosts = append(hosts, u.Hostname())
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	cert, pin, err := st.IssueAgentAPICert(ctx, member+"-agent-api", hosts)
	if errors.Is(err, store.ErrNotEmbedded) {
		return agentTLSConfig{}, errors.New("--agent-tls=on needs the cluster CA, which only an embedded etcd member has: run the region on a member, or pass --agent-tls=off")
	}
	if err != nil {
		return agentTLSConfig{}, err
	}
	return agentTLSConfig{cert: cert, pin: pin, hosts: hosts}, nil
}
