package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/internal/pki"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/ui"
	"github.com/spf13/cobra"
)

// joinOptions are the flags only `lpmos join` has.
type joinOptions struct {
	token     string
	peerURL   string
	clientURL string
	// exitAfterAdd (hidden, for tests): stop right after the cluster added
	// this member as a learner, as a join killed at that point would.
	exitAfterAdd bool
	// failAfterAdd (hidden, for tests): fail right after the admission, as
	// a member that cannot start would; the join then takes its add back.
	failAfterAdd bool
	// caCert: the CA of the member's HTTPS certificate when it is not the
	// cluster CA (it serves --tls-cert); app/join_pinned.go.
	caCert string
}

func newJoinCmd(version string) *cobra.Command {
	o := serveOptions{}
	j := joinOptions{}
	cmd := &cobra.Command{
		Use:   "join URL --token TOKEN --region-id REGION",
		Short: "Join this box to an lpmos cluster and serve a region",
		Long: `Join an lpmos cluster through the control plane URL of any member, then run
like 'lpmos serve' with this data dir (restart it later with plain 'lpmos serve').

The token comes from 'lpmos token create' on a member. It pins the cluster CA
by its hash: a URL that answers with another CA is refused before anything is
sent. The secret itself never leaves this box (a proof bound to this member's
key is sent instead). The new member starts as a learner and is promoted to a
voting member once it has caught up.`,
		Example: "  lpmos join https://lpmos-1.example:8080 --token LPM10...::abc.xyz --region-id dc2 --name lpmos-2 \\\n    --peer-url https://10.0.2.5:2380 --client-url https://10.0.2.5:2379",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			if f.Changed("peer-url") {
				o.etcdPeerURL = j.peerURL
			}
			if f.Changed("client-url") {
				o.etcdClientURL = j.clientURL
			}
			return runJoin(cmd.Context(), args[0], o, j, version, cmd.ErrOrStderr())
		},
	}
	addServeFlags(cmd, &o)
	f := cmd.Flags()
	f.StringVar(&j.token, "token", "", "join token from `lpmos token create` (required)")
	f.StringVar(&j.peerURL, "peer-url", "", "same as --etcd-peer-url: https URL the other members reach this member's etcd at")
	f.StringVar(&j.clientURL, "client-url", "", "same as --etcd-client-url: https URL of this member's etcd clients")
	f.BoolVar(&j.exitAfterAdd, "exit-after-add", false, "testing: exit right after the cluster added this member")
	_ = f.MarkHidden("exit-after-add")
	f.BoolVar(&j.failAfterAdd, "fail-after-add", false, "testing: fail right after the cluster added this member")
	_ = f.MarkHidden("fail-after-add")
	f.StringVar(&j.caCert, "ca-cert", "", "CA of the member's HTTPS certificate when it serves its own --tls-cert (the cluster CA, pinned by the token, is always trusted)")
	_ = cmd.MarkFlagRequired("token")
	return cmd
}

func runJoin(ctx context.Context, server string, o serveOptions, j joinOptions, version string, logOut io.Writer) error {
	log, err := newLogger(logOut, o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	if len(o.etcdEndpoints) > 0 {
		return errors.New("join starts an embedded etcd member: drop --etcd-endpoints (with an external etcd, just run `lpmos serve --etcd-endpoints ...` on the new box)")
	}
	if o.name == "" {
		o.name, _ = os.Hostname()
	}
	etcdDir := filepath.Join(o.dataDir, "etcd")
	if _, err := os.Stat(filepath.Join(etcdDir, "removed")); err == nil {
		return fmt.Errorf("%s belongs to a member that was removed from its cluster: join with a new --data-dir", o.dataDir)
	}
	if store.HoldsMember(etcdDir) {
		return fmt.Errorf("%s already holds a cluster member: restart it with `lpmos serve --data-dir %s` (or use a new --data-dir to join as a new member)", o.dataDir, o.dataDir)
	}
	pin, tokenID, secret, err := store.ParseJoinToken(j.token)
	if err != nil {
		if os.Getenv("LPMOS_TOKEN") != "" {
			return fmt.Errorf("%w (LPMOS_TOKEN is set: it fills --token, but join wants the join token, not the admin token)", err)
		}
		return err
	}
	if err := joinPreflight(o); err != nil { // app/join_check.go
		return err
	}
	server = strings.TrimRight(server, "/")
	start := time.Now()

	// The member's CA must be the one the token pins: no trust on first use.
	// Its TLS certificate (if any) is not checked for this one call; the
	// pin is, and every later call trusts only the pinned CA.
	hc := &http.Client{Timeout: 90 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the CA is checked against the token's pin
	}}
	var caResp ui.CAResponse
	if err := joinCall(ctx, hc, "GET", server+"/api/v1/cluster/ca", nil, &caResp); err != nil {
		return fmt.Errorf("fetch the cluster CA from %s: %w", server, err)
	}
	ca, err := pki.ParseCertPEM([]byte(caResp.CA))
	if err != nil {
		return fmt.Errorf("the CA from %s: %w", server, err)
	}
	if got := pki.Fingerprint(ca); got != pin {
		return fmt.Errorf("the CA of %s (sha256 %s) does not match the token's pin (%s): check the URL is a member of the cluster the token came from; nothing was sent", server, got, pin)
	}
	if hc, err = pinnedJoinClient(ca, j.caCert); err != nil { // app/join_pinned.go
		return err
	}

	keyPEM, csrPEM, err := pki.NewKeyAndCSR(o.name)
	if err != nil {
		return err
	}
	csr, err := pki.ParseCSR(csrPEM)
	if err != nil {
		return err
	}
	req := store.JoinRequest{
		TokenID: tokenID, Proof: store.JoinProof(secret, csr.Raw), CSR: string(csrPEM),
		Name: o.name, PeerURL: o.etcdPeerURL, ClientURL: o.etcdClientURL, RegionID: o.regionID,
	}
	var resp store.JoinResponse
	if err := joinCall(ctx, hc, "POST", server+"/api/v1/cluster/join", req, &resp); err != nil {
		return fmt.Errorf("join refused by %s: %w", server, joinTLSHint(err))
	}
	// From here on the cluster holds this member as a learner: a failure
	// before it serves takes the add back, so the cluster stays as it was.
	ready := false
	o.onReady = func() { ready = true }
	err = admittedJoin(ctx, server, o, j, version, logOut, log, keyPEM, ca, caResp, resp, start)
	if err != nil && !ready && ctx.Err() == nil {
		abortJoin(ctx, hc, server, req, resp.MemberID, o.dataDir, err, log)
		return fmt.Errorf("%w (the cluster was admitting this member; it was taken back)", err)
	}
	return err
}

// admittedJoin finishes a join the cluster admitted: it writes the
// member's credentials and runs the member.
func admittedJoin(ctx context.Context, server string, o serveOptions, j joinOptions, version string, logOut io.Writer, log *slog.Logger,
	keyPEM []byte, ca *x509.Certificate, caResp ui.CAResponse, resp store.JoinResponse, start time.Time) error {
	if !pki.SameCert([]byte(resp.CA), []byte(caResp.CA)) {
		return fmt.Errorf("%s answered the join with another CA than the pinned one: refusing", server)
	}
	if err := verifyMemberCert(resp.Cert, keyPEM, ca); err != nil {
		return fmt.Errorf("the certificate from %s: %w", server, err)
	}
	if j.failAfterAdd {
		return errors.New("failing right after the add (--fail-after-add)")
	}
	admitted := time.Since(start)
	pdir := pki.Dir(filepath.Join(o.dataDir, "pki"))
	if err := os.MkdirAll(string(pdir), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", pdir, err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{pki.MemberKeyFile, keyPEM, 0o600},
		{pki.MemberCertFile, []byte(resp.Cert), 0o644},
		{pki.CACertFile, []byte(resp.CA), 0o644},
	} {
		if err := pki.WriteFile(pdir.Path(f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	_ = os.Remove(pdir.Path(pki.CAKeyFile)) // a joined member signs with the key in etcd
	if ok, err := store.InstallClusterKey(o.dataDir, resp, keyPEM); err != nil {
		return fmt.Errorf("the cluster key from %s: %w", server, err)
	} else if !ok {
		log.Warn("the admitting member sent no cluster key (it runs an older lpmos): this member cannot admit joiners until a cluster key is copied to " + pdir.Path(store.ClusterKeyFile))
	}
	if err := saveMemberFile(o); err != nil {
		return err
	}
	log.Info("admitted to the cluster as a learner", "server", server, "name", o.name, "member_id", resp.MemberID,
		"reused_interrupted_add", resp.Reused, "initial_cluster", resp.InitialCluster, "took", admitted.Round(time.Millisecond))
	if resp.Warning != "" {
		log.Warn(resp.Warning)
	}
	if j.exitAfterAdd {
		log.Warn("stopping right after the add (--exit-after-add): run the same join again to finish")
		return nil
	}
	o.clusterState = "existing"
	o.initialCluster = resp.InitialCluster
	return runServe(ctx, o, version, logOut)
}

// verifyMemberCert checks the issued certificate: signed by the cluster CA
// and holding our public key.
func verifyMemberCert(certPEM string, keyPEM []byte, ca *x509.Certificate) error {
	cert, err := pki.ParseCertPEM([]byte(certPEM))
	if err != nil {
		return err
	}
	if err := cert.CheckSignatureFrom(ca); err != nil {
		return fmt.Errorf("not signed by the cluster CA: %w", err)
	}
	if !pki.CertMatchesKey([]byte(certPEM), keyPEM) {
		return errors.New("not issued for this member's key")
	}
	return nil
}

// joinCall is a JSON call without the admin token (a join authenticates
// with its token proof).
func joinCall(ctx context.Context, hc *http.Client, method, url string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e wire.Error
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer of %s: %w", url, err)
	}
	return nil
}
