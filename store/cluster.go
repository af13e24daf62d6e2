package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lpmos/lpmos/internal/pki"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Cluster keys.
const (
	keyClusterCA     = "/cluster/ca"
	prefixJoinTokens = "/cluster/join-tokens/"
	keyJoinLock      = "/cluster/join-lock"
)

// Membership errors.
var (
	// ErrRemoved: the member was removed from its cluster.
	ErrRemoved = errors.New("member removed from its cluster")
	// ErrJoinDenied: a join token is unknown, expired, used or wrong.
	ErrJoinDenied = errors.New("join denied")
	// ErrNotEmbedded: membership needs the embedded etcd member.
	ErrNotEmbedded = errors.New("this lpmos uses an external etcd: cluster membership is managed by that etcd")
)

// Member is one etcd member as GET /api/v1/cluster/members shows it.
type Member struct {
	ID         string   `json:"id"`   // hex, as etcdctl prints it
	Name       string   `json:"name"` // empty while a learner was added but has not started
	PeerURLs   []string `json:"peer_urls"`
	ClientURLs []string `json:"client_urls"`
	Learner    bool     `json:"learner"`
	Leader     bool     `json:"leader"`
	Self       bool     `json:"self"`    // the member of the answering process
	Healthy    bool     `json:"healthy"` // answered a status request and sees a leader
	Error      string   `json:"error,omitempty"`
	RaftIndex  uint64   `json:"raft_index,omitempty"`
	Regions    []string `json:"regions"` // regions served by this member (from /regions/{id})
}

// Role is "voter" or "learner".
func (m Member) Role() string {
	if m.Learner {
		return "learner"
	}
	return "voter"
}

// ClusterStatus is the answer of GET /api/v1/cluster/members.
type ClusterStatus struct {
	ClusterID      string   `json:"cluster_id"`
	Leader         string   `json:"leader"` // name of the leader ("" when none is known)
	Voters         int      `json:"voters"`
	FaultTolerance int      `json:"fault_tolerance"` // voters that may fail with writes still working
	Members        []Member `json:"members"`
}

// JoinRequest is the body of POST /api/v1/cluster/join. The join secret
// never travels: Proof is hex HMAC-SHA256 of the CSR's DER bytes keyed by
// the secret's sha256 (what the cluster stores), so a proof is bound to the
// joiner's own key.
type JoinRequest struct {
	TokenID   string `json:"token_id"`
	Proof     string `json:"proof"`
	CSR       string `json:"csr"` // PEM
	Name      string `json:"name"`
	PeerURL   string `json:"peer_url"`
	ClientURL string `json:"client_url"`
	RegionID  string `json:"region_id,omitempty"`
}

// JoinResponse is the answer of POST /api/v1/cluster/join.
type JoinResponse struct {
	CA             string   `json:"ca"`   // PEM of the cluster CA
	Cert           string   `json:"cert"` // PEM of the joiner's member certificate
	MemberID       string   `json:"member_id"`
	InitialCluster string   `json:"initial_cluster"` // every member, learners included
	ClientURLs     []string `json:"client_urls"`     // of the started members
	Reused         bool     `json:"reused"`          // an interrupted add of this peer URL was reused
	Warning        string   `json:"warning,omitempty"`
	// ClusterKey is the key that seals the CA key in etcd, sealed to the
	// public key of the joiner's CSR (see InstallClusterKey).
	ClusterKey string `json:"cluster_key,omitempty"`
}

// caRecord is /cluster/ca: the CA every member signs joins with. The key
// is sealed under the cluster key (store/cakey.go), so any member can admit
// a new one while etcd alone (a snapshot, a client) does not yield it. Key
// is the plain PEM of records from before sealing (migrated on start).
type caRecord struct {
	Cert      string `json:"cert"`
	Key       string `json:"key,omitempty"`
	KeySealed string `json:"key_sealed,omitempty"` // base64 nonce||AES-256-GCM(key PEM), AD = CA DER
	KeyID     string `json:"key_id,omitempty"`     // which cluster key sealed it
}

// CA returns the cluster CA certificate of an embedded member (nil for an
// external store).
func (s *Store) CA() *pki.CA { return s.ca.Load() }

// publishCA stores the local CA (its key sealed under the cluster key) in
// etcd unless one is there, and warns when the one there differs.
func (s *Store) publishCA(ctx context.Context) error {
	sealed, err := sealCAKey(s.clusterKey, s.ca.Load())
	if err != nil {
		return err
	}
	rec := mustJSON(sealed)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(keyClusterCA), "=", 0)).
		Then(clientv3.OpPut(keyClusterCA, rec)).
		Else(clientv3.OpGet(keyClusterCA)).Commit()
	if err != nil {
		return fmt.Errorf("publish cluster CA: %w", err)
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		var have caRecord
		if len(kvs) == 1 && json.Unmarshal(kvs[0].Value, &have) == nil && !pki.SameCert([]byte(have.Cert), s.ca.Load().CertPEM) {
			s.log.Warn("store: the cluster CA in etcd differs from this member's CA file")
		}
	}
	return nil
}

// signer returns a CA that can sign: the local one if it has its key, else
// the one shared in etcd (which must be the same certificate).
func (s *Store) signer(ctx context.Context) (*pki.CA, error) {
	if s.ca.Load() == nil {
		return nil, ErrNotEmbedded
	}
	if s.ca.Load().Key != nil {
		return s.ca.Load(), nil
	}
	resp, err := s.cli.Get(ctx, keyClusterCA)
	if err != nil {
		return nil, fmt.Errorf("read cluster CA: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, errors.New("the cluster CA key is not in etcd: ask the first member (it shares it on start)")
	}
	var rec caRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return nil, fmt.Errorf("decode cluster CA: %w", err)
	}
	ca, err := openCA(rec, s.clusterKey)
	if err != nil {
		return nil, err
	}
	if !pki.SameCert(ca.CertPEM, s.ca.Load().CertPEM) {
		return nil, errors.New("the cluster CA in etcd differs from this member's: refusing to sign")
	}
	return ca, nil
}

// memberStatus asks one member for its status. This member answers in
// process. Another member answers over a TLS connection kept open from one
// call to the next: clientv3's Status(ctx, endpoint) dials a new connection
// on every call (a TLS handshake at both ends, ~40 KB of allocations and
// ~1 ms of CPU each), and the health poll asks every member every 3 s.
// An external store asks through its own client.
func (s *Store) memberStatus(ctx context.Context, id uint64, url string) (*clientv3.StatusResponse, error) {
	if s.etcd == nil || id == uint64(s.etcd.Server.MemberID()) {
		return s.cli.Status(ctx, url) // the embedded client ignores url: it is this member's own
	}
	cli, err := s.memberClient(url)
	if err != nil {
		return nil, err
	}
	resp, err := etcdserverpb.NewMaintenanceClient(cli.ActiveConnection()).Status(ctx, &etcdserverpb.StatusRequest{})
	if err != nil {
		return nil, clientv3.ContextError(ctx, err)
	}
	return (*clientv3.StatusResponse)(resp), nil
}

// memberClient is the kept TLS client to the member at url.
func (s *Store) memberClient(url string) (*clientv3.Client, error) {
	s.remoteMu.Lock()
	defer s.remoteMu.Unlock()
	if s.closing.Load() {
		return nil, errors.New("store: closing")
	}
	if cli := s.remote[url]; cli != nil {
		return cli, nil
	}
	cli, err := s.tlsClient([]string{url})
	if err != nil {
		return nil, err
	}
	if s.remote == nil {
		s.remote = map[string]*clientv3.Client{}
	}
	s.remote[url] = cli
	return cli, nil
}

// closeMemberClients closes the kept clients whose URL is not in keep (all
// of them when keep is nil): a member that left, or changed its URL, is not
// dialled again.
func (s *Store) closeMemberClients(keep map[string]bool) {
	s.remoteMu.Lock()
	defer s.remoteMu.Unlock()
	for url, cli := range s.remote {
		if !keep[url] {
			_ = cli.Close()
			delete(s.remote, url)
		}
	}
}

// tlsClient opens a client to endpoints with this member's certificate.
func (s *Store) tlsClient(endpoints []string) (*clientv3.Client, error) {
	tc, err := s.tls.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("member TLS: %w", err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 3 * time.Second,
		TLS:         tc,
		Logger:      s.clientZap,
	})
	if err != nil {
		return nil, fmt.Errorf("connect to %v: %w", endpoints, err)
	}
	return cli, nil
}

// promoteSelf turns this learner into a voter: MemberPromote through the
// other members every 100 ms until it is no longer "not in sync".
func (s *Store) promoteSelf(ctx context.Context) error {
	id := uint64(s.etcd.Server.MemberID())
	var eps []string
	for _, m := range s.etcd.Server.Cluster().Members() {
		if uint64(m.ID) != id {
			eps = append(eps, m.ClientURLs...)
		}
	}
	if len(eps) == 0 {
		return errors.New("store: this learner knows no other member to promote it")
	}
	cli, err := s.tlsClient(eps)
	if err != nil {
		return err
	}
	defer cli.Close()
	start := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := cli.MemberPromote(cctx, id)
		cancel()
		if err == nil || strings.Contains(err.Error(), "can only promote a learner member") && !strings.Contains(err.Error(), "in sync") {
			// The leader applied the promotion; this member refuses
			// writes as a learner until it applies it too (a join's next
			// write failed so, and took the cluster's quorum with it).
			for s.etcd.Server.IsLearner() {
				select {
				case <-ctx.Done():
					return fmt.Errorf("store: promoted, but this member has not applied its promotion yet: %w", ctx.Err())
				case <-s.etcd.Server.StoppingNotify():
					return errors.New("store: this member stopped while applying its promotion")
				case <-time.After(20 * time.Millisecond):
				}
			}
			s.log.Info("store: promoted to voting member", "took", time.Since(start).Round(time.Millisecond))
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("store: promote this learner to a voting member: %w (last error: %v)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// ClusterStatus lists the members with their role, leader and health (each
// member is asked for its status, in parallel, within a second or two) and
// the regions each one serves.
func (s *Store) ClusterStatus(ctx context.Context) (ClusterStatus, error) {
	// Serializable: this member's own view, so health still lists the
	// members when quorum is lost.
	resp, err := s.cli.MemberList(ctx, clientv3.WithSerializable())
	if err != nil {
		return ClusterStatus{}, fmt.Errorf("list members: %w", err)
	}
	st := ClusterStatus{ClusterID: strconv.FormatUint(resp.Header.ClusterId, 16), Members: []Member{}}
	var self uint64
	if s.etcd != nil {
		self = uint64(s.etcd.Server.MemberID())
	}
	regions := map[string][]string{}
	if rr, err := s.cli.Get(ctx, prefixRegions, clientv3.WithPrefix(), clientv3.WithSerializable()); err == nil {
		for _, kv := range rr.Kvs {
			var r Region
			if json.Unmarshal(kv.Value, &r) == nil {
				regions[r.Member] = append(regions[r.Member], r.ID)
			}
		}
	}
	type result struct {
		st  *clientv3.StatusResponse
		err error
	}
	results := make([]result, len(resp.Members))
	urls := map[string]bool{}
	var wg sync.WaitGroup
	for i, m := range resp.Members {
		if len(m.ClientURLs) == 0 {
			results[i].err = fmt.Errorf("not started: a join that has not finished added it; run that `lpmos join` again, or `lpmos member remove %x`", m.ID)
			continue
		}
		urls[m.ClientURLs[0]] = true
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
			defer cancel()
			r, err := s.memberStatus(cctx, m.ID, m.ClientURLs[0])
			results[i] = result{r, err}
		})
	}
	wg.Wait()
	s.closeMemberClients(urls)
	var leader uint64
	for _, r := range results {
		if r.st != nil && r.st.Leader != 0 {
			leader = r.st.Leader
		}
	}
	for i, m := range resp.Members {
		mem := Member{
			ID: strconv.FormatUint(m.ID, 16), Name: m.Name, Learner: m.IsLearner,
			PeerURLs: nonNil(m.PeerURLs), ClientURLs: nonNil(m.ClientURLs),
			Leader: m.ID == leader, Self: m.ID == self, Regions: nonNil(regions[m.Name]),
		}
		r := results[i]
		switch {
		case r.err != nil:
			mem.Error = r.err.Error()
		case r.st.Leader == 0:
			mem.Error = "no leader: the cluster has lost quorum"
		default:
			mem.Healthy = true
			mem.RaftIndex = r.st.RaftIndex
		}
		if !m.IsLearner {
			st.Voters++
		}
		if mem.Leader {
			st.Leader = m.Name
		}
		st.Members = append(st.Members, mem)
	}
	st.FaultTolerance = (st.Voters - 1) / 2
	sort.Slice(st.Members, func(i, j int) bool { return st.Members[i].Name < st.Members[j].Name })
	return st, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// retryable reports the membership errors CLUSTER.md says to retry.
func retryable(err error) bool {
	msg := err.Error()
	for _, m := range []string{"too many learner members", "unhealthy cluster", "member not found", "leader changed", "no leader"} {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// AdmitMember handles a join: it checks the token proof, refuses a name or
// peer URL already in the cluster, adds the joiner as a learner (or reuses
// its interrupted add) under the join lock, signs its certificate and
// returns what it needs to start. A refused join leaves the cluster as it
// was.
func (s *Store) AdmitMember(ctx context.Context, req JoinRequest) (JoinResponse, error) {
	if s.etcd == nil {
		return JoinResponse{}, ErrNotEmbedded
	}
	if !validName(req.Name, 64) {
		return JoinResponse{}, fmt.Errorf("%w: member name %q: use letters, digits, '.', '-' or '_' (--name)", ErrInvalid, req.Name)
	}
	purl, err := parseMemberURL("peer", req.PeerURL)
	if err != nil {
		return JoinResponse{}, fmt.Errorf("%w: %v (--peer-url)", ErrInvalid, err)
	}
	curl, err := parseMemberURL("client", req.ClientURL)
	if err != nil {
		return JoinResponse{}, fmt.Errorf("%w: %v (--client-url)", ErrInvalid, err)
	}
	if req.Name == rootUser {
		return JoinResponse{}, fmt.Errorf("%w: member name %q is reserved: pick another --name", ErrInvalid, req.Name)
	}
	csr, err := pki.ParseCSR([]byte(req.CSR))
	if err != nil {
		return JoinResponse{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	tok, tokRev, err := s.checkJoinToken(ctx, req.TokenID, req.Proof, csr.Raw)
	if err != nil {
		return JoinResponse{}, err
	}
	if tok.SingleUse && tok.UsedBy != "" && tok.UsedBy != req.PeerURL {
		return JoinResponse{}, fmt.Errorf("%w: this single-use join token was already used (by the member at %s); create a new one with `lpmos token create` (`--reusable` for several joins)", ErrJoinDenied, tok.UsedBy)
	}

	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(15), concurrency.WithContext(ctx))
	if err != nil {
		return JoinResponse{}, fmt.Errorf("join lock session: %w", err)
	}
	defer sess.Close()
	mu := concurrency.NewMutex(sess, keyJoinLock)
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = mu.Lock(lctx)
	cancel()
	if err != nil {
		return JoinResponse{}, fmt.Errorf("wait for the join lock (another join is running): %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = mu.Unlock(uctx)
	}()
	// Read the token again under the lock: a concurrent join may have used
	// it, or an operator revoked it, while this one waited.
	if tok, tokRev, err = s.checkJoinToken(ctx, req.TokenID, req.Proof, csr.Raw); err != nil {
		return JoinResponse{}, err
	}
	if tok.SingleUse && tok.UsedBy != "" && tok.UsedBy != req.PeerURL {
		return JoinResponse{}, fmt.Errorf("%w: this single-use join token was already used (by the member at %s); create a new one with `lpmos token create` (`--reusable` for several joins)", ErrJoinDenied, tok.UsedBy)
	}

	list, err := s.cli.MemberList(ctx)
	if err != nil {
		return JoinResponse{}, fmt.Errorf("list members: %w", err)
	}
	var reuse *etcdserverpb.Member
	voters := 0
	for _, m := range list.Members {
		if !m.IsLearner {
			voters++
		}
		switch {
		case slices.Contains(m.PeerURLs, req.PeerURL) && m.Name == "":
			reuse = m
		case slices.Contains(m.PeerURLs, req.PeerURL) && m.Name == req.Name:
			return JoinResponse{}, fmt.Errorf("%w: member %q with peer URL %s is already in the cluster: restart it with `lpmos serve --data-dir <its data dir>`, or remove it first with `lpmos member remove %s`", ErrConflict, m.Name, req.PeerURL, m.Name)
		case slices.Contains(m.PeerURLs, req.PeerURL):
			return JoinResponse{}, fmt.Errorf("%w: peer URL %s is already used by member %q: pick another --peer-url, or remove %q first", ErrConflict, req.PeerURL, m.Name, m.Name)
		case m.Name == req.Name:
			return JoinResponse{}, fmt.Errorf("%w: the name %q is taken by the member at %v: pick another --name, or `lpmos member remove %s` first", ErrConflict, req.Name, m.PeerURLs, m.Name)
		case m.Name != "" && slices.Contains(m.ClientURLs, req.ClientURL):
			return JoinResponse{}, fmt.Errorf("%w: client URL %s is already used by member %q: pick another --client-url", ErrConflict, req.ClientURL, m.Name)
		}
	}
	if tok.SingleUse && tok.UsedBy == req.PeerURL && reuse == nil {
		return JoinResponse{}, fmt.Errorf("%w: this single-use join token was already used (by the member at %s); create a new one with `lpmos token create` (`--reusable` for several joins)", ErrJoinDenied, tok.UsedBy)
	}
	ca, err := s.signer(ctx)
	if err != nil {
		return JoinResponse{}, err
	}
	user, err := memberUser(req.Name)
	if err != nil {
		return JoinResponse{}, err
	}
	certPEM, err := ca.SignMemberFor(user, csr.PublicKey, []string{purl.Hostname(), curl.Hostname()}, s.memberCertTTL())
	if err != nil {
		return JoinResponse{}, err
	}
	if err := registerCertPEM(ctx, s.cli, certPEM); err != nil { // store/membercerts.go: revocable from now on
		return JoinResponse{}, err
	}
	if err := addMemberUser(ctx, s.cli, user); err != nil {
		return JoinResponse{}, err
	}
	added := false
	defer func() {
		if !added {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, err := s.cli.UserDelete(dctx, user); err != nil {
				s.log.Warn("store: could not delete the etcd user of a refused join", "user", user, "error", err)
			}
		}
	}()

	out := JoinResponse{CA: string(s.ca.Load().CertPEM), Cert: string(certPEM), Reused: reuse != nil}
	if s.clusterKey != nil {
		if out.ClusterKey, err = sealForCSR(csr.PublicKey, s.clusterKey); err != nil {
			return JoinResponse{}, fmt.Errorf("%w: seal the cluster key to the CSR: %v", ErrInvalid, err)
		}
	}
	var id uint64
	if reuse != nil {
		id = reuse.ID
		s.log.Info("store: join reuses an interrupted learner add", "name", req.Name, "id", strconv.FormatUint(id, 16), "peer_url", req.PeerURL)
	} else {
		deadline := time.Now().Add(30 * time.Second)
		for {
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			r, err := s.cli.MemberAddAsLearner(actx, []string{req.PeerURL})
			cancel()
			if err == nil {
				id = r.Member.ID
				break
			}
			if !retryable(err) || time.Now().After(deadline) || ctx.Err() != nil {
				hint := ""
				if strings.Contains(err.Error(), "too many learner members") {
					hint = ": another learner has not finished joining; finish that join (run its `lpmos join` again) or remove it with `lpmos member remove <id>`"
				}
				return JoinResponse{}, fmt.Errorf("add %s as a learner: %w%s", req.Name, err, hint)
			}
			s.log.Info("store: learner add refused for now, retrying", "name", req.Name, "error", err)
			select {
			case <-ctx.Done():
				return JoinResponse{}, ctx.Err()
			case <-time.After(time.Second):
			}
		}
		s.log.Info("store: added learner", "name", req.Name, "id", strconv.FormatUint(id, 16), "peer_url", req.PeerURL, "region", req.RegionID)
	}
	out.MemberID = strconv.FormatUint(id, 16)
	s.recordJoinAdd(ctx, id, req, tok, csr.Raw) // store/cluster_join_abort.go
	if _, err := s.cli.Put(ctx, prefixMemberUsers+out.MemberID, req.Name); err != nil {
		return JoinResponse{}, fmt.Errorf("record the etcd user of member %s: %w", req.Name, err)
	}
	added = true
	if tok.SingleUse && tok.UsedBy == "" {
		tok.UsedBy = req.PeerURL
		if _, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(joinTokenKey(req.TokenID)), "=", tokRev)).
			Then(clientv3.OpPut(joinTokenKey(req.TokenID), mustJSON(tok), clientv3.WithIgnoreLease())).Commit(); err != nil {
			s.log.Warn("store: could not mark a single-use join token used", "token", req.TokenID, "error", err)
		}
	}

	list, err = s.cli.MemberList(ctx)
	if err != nil {
		return JoinResponse{}, fmt.Errorf("list members after the add: %w", err)
	}
	var parts []string
	for _, m := range list.Members {
		name := m.Name
		if m.ID == id {
			name = req.Name
		} else if name == "" {
			name = "unstarted-" + strconv.FormatUint(m.ID, 16)
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, name+"="+u)
		}
		if m.ID != id {
			out.ClientURLs = append(out.ClientURLs, m.ClientURLs...)
		}
	}
	sort.Strings(parts)
	out.InitialCluster = strings.Join(parts, ",")
	if voters == 1 {
		out.Warning = "the cluster had 1 voting member; with this one it has 2 and tolerates no failure (either one down stops all writes): join a third member soon"
	}
	return out, nil
}

// memberGone reports whether member id is removed: applied by this
// member, or absent from the member list of the others (false when none
// answers).
func (s *Store) memberGone(ctx context.Context, list []*etcdserverpb.Member, id uint64) bool {
	if s.etcd != nil && s.etcd.Server.IsIDRemoved(id) { // applied here (this member may be the one removed)
		return true
	}
	var eps []string
	for _, m := range list {
		if m.ID != id {
			eps = append(eps, m.ClientURLs...)
		}
	}
	cli, err := s.tlsClient(eps)
	if err != nil {
		return false
	}
	defer cli.Close()
	for range 10 { // the remaining members may still be applying it
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		resp, err := cli.MemberList(lctx)
		cancel()
		if err == nil && !slices.ContainsFunc(resp.Members, func(m *etcdserverpb.Member) bool { return m.ID == id }) {
			return true
		}
		time.Sleep(300 * time.Millisecond)
	}
	return false
}

// RemoveMember removes a member by name, hex id or peer URL (retrying
// "unhealthy cluster"). The removed member stops and tombstones its data
// dir when it learns of it.
func (s *Store) RemoveMember(ctx context.Context, who string) (Member, error) {
	list, err := s.cli.MemberList(ctx)
	if err != nil {
		return Member{}, fmt.Errorf("list members: %w", err)
	}
	var target *etcdserverpb.Member
	for _, m := range list.Members {
		if m.Name == who || strconv.FormatUint(m.ID, 16) == strings.ToLower(who) || slices.Contains(m.PeerURLs, who) {
			target = m
			break
		}
	}
	if target == nil {
		return Member{}, fmt.Errorf("%w: no member %q (see `lpmos member list`)", ErrNotFound, who)
	}
	if len(list.Members) == 1 {
		return Member{}, fmt.Errorf("%w: %q is the last member of the cluster: stop it instead of removing it", ErrConflict, who)
	}
	// A member that removes itself stops as soon as the removal applies:
	// its lease keepalives stop first (store/keepalive.go).
	self := s.etcd != nil && target.ID == uint64(s.etcd.Server.MemberID())
	if self && s.haltKeepAlives() {
		select {
		case <-ctx.Done():
			s.resumeKeepAlives()
			return Member{}, ctx.Err()
		case <-time.After(keepAliveDrain):
		}
	}
	if err := s.removeMemberID(ctx, who, list.Members, target.ID); err != nil {
		if self {
			s.resumeKeepAlives()
		}
		return Member{}, err
	}
	s.log.Info("store: removed member", "name", target.Name, "id", strconv.FormatUint(target.ID, 16))
	// Its certificate dies with it: delete its etcd users, through the
	// members that remain (the removed one may be this one, stopping).
	var eps []string
	for _, m := range list.Members {
		if m.ID != target.ID {
			eps = append(eps, m.ClientURLs...)
		}
	}
	var delErr error
	if cli, err := s.tlsClient(eps); err != nil {
		delErr = err
	} else {
		// Not cancelled with the request: when this member removed itself
		// (`lpmos leave`) it is stopping, and the deletion must still run.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		delErr = s.deleteMemberUsersWith(dctx, cli, target.ID, target.Name)
		cancel()
		_ = cli.Close()
	}
	if delErr != nil {
		return Member{}, fmt.Errorf("member %q was removed, but its etcd user was not deleted, so its certificate still works: %w", who, delErr)
	}
	return Member{ID: strconv.FormatUint(target.ID, 16), Name: target.Name, PeerURLs: nonNil(target.PeerURLs),
		ClientURLs: nonNil(target.ClientURLs), Learner: target.IsLearner, Regions: []string{}}, nil
}

// removeMemberID removes member id, retrying "unhealthy cluster" for 20 s,
// and counts a removal that applied although its answer was lost as done.
func (s *Store) removeMemberID(ctx context.Context, who string, members []*etcdserverpb.Member, id uint64) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := s.cli.MemberRemove(rctx, id)
		cancel()
		if err == nil {
			return nil
		}
		// A member removing itself (`lpmos leave`) may stop before it
		// answers ("server stopped") although the removal applied: ask
		// the members that remain.
		if !strings.Contains(err.Error(), "unhealthy cluster") && s.memberGone(ctx, members, id) {
			return nil
		}
		if !strings.Contains(err.Error(), "unhealthy cluster") || time.Now().After(deadline) || ctx.Err() != nil {
			hint := ""
			if strings.Contains(err.Error(), "unhealthy cluster") {
				hint = " (removing it would leave too few healthy members for a quorum: bring a member back first)"
			}
			return fmt.Errorf("remove member %q: %w%s", who, err, hint)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
