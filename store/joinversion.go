package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/embed"
)

// A joining member's etcd refuses to start ("incompatible with current
// running cluster") when no other member answers a cluster version etcd
// can parse. A member that was just started answers "not_decided" until
// its leader has committed the cluster version. etcd's
// monitorClusterVersions proposes it when the term's first entry is
// applied (firstCommitInTerm) and otherwise every 4 s; when the monitor
// goroutine is scheduled late (a loaded box) the notification of a single
// member's quick election fires before it first waits on it, and the
// version comes up to 4 s after the member is ready. A join that lands in that
// window used to fail and be taken back although a retry a moment later
// succeeds; an operator's join right after the first `serve` hits it too.
const (
	// joinVersionWait bounds the retries: a few of etcd's 4 s monitor
	// rounds, each of which may take a request timeout to commit.
	joinVersionWait  = 30 * time.Second
	joinVersionFirst = 250 * time.Millisecond
	joinVersionMax   = 4 * time.Second
	// notDecided is what a member's /version answers as etcdcluster until
	// the cluster version is committed.
	notDecided = "not_decided"
)

// errIncompatible is the text of etcd's bootstrap error for a join that
// found no compatible cluster version (etcdserver/bootstrap.go).
const errIncompatible = "incompatible with current running cluster"

// startJoining runs start (embed.StartEtcd of a joining member without a
// WAL) and, while it fails with etcd's version incompatibility and
// transient says the remote members' cluster version is only undecided,
// starts again after a backoff, for at most wait. A failed start leaves no
// WAL behind (bootstrap fails before creating it), so the next start is
// again a first join with the same membership.
func startJoining(ctx context.Context, log *slog.Logger, wait time.Duration,
	start func() (*embed.Etcd, error), transient func(context.Context) (bool, string)) (*embed.Etcd, error) {
	deadline := time.Now().Add(wait)
	backoff := joinVersionFirst
	for attempt := 1; ; attempt++ {
		e, err := start()
		if err == nil || !strings.Contains(err.Error(), errIncompatible) {
			return e, err
		}
		ok, detail := transient(ctx)
		if !ok {
			return nil, fmt.Errorf("%w (the other members answer: %s)", err, detail)
		}
		if time.Now().Add(backoff).After(deadline) {
			return nil, fmt.Errorf("%w: the cluster version was still undecided after %s (%s)", err, wait, detail)
		}
		log.Warn("store: the cluster has not decided its version yet (a member just started); starting the joining member again",
			"attempt", attempt, "retry_in", backoff, "members", detail)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (while waiting for the cluster version: %w)", err, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, joinVersionMax)
	}
}

// remoteVersionsTransient asks every other member of initialCluster
// (name=peerURL,...) for its versions over the peer URL, as etcd's
// bootstrap does, and says whether etcd's refusal can pass by itself: some
// member answers "not_decided", or a cluster version this etcd accepts
// (decided since the refusal). A member that answers an out-of-range
// version, or no member answering, is not transient. detail lists the
// answers for the log and the error.
func remoteVersionsTransient(ctx context.Context, hc *http.Client, initialCluster, self string) (bool, string) {
	urls, err := types.NewURLsMap(initialCluster)
	if err != nil {
		return false, fmt.Sprintf("initial cluster %q: %v", initialCluster, err)
	}
	transient := false
	var answers []string
	for name, us := range urls {
		if name == self {
			continue
		}
		for _, u := range us {
			v, err := peerVersions(ctx, hc, u.String())
			if err != nil {
				answers = append(answers, fmt.Sprintf("%s: %v", name, err))
				continue
			}
			answers = append(answers, fmt.Sprintf("%s: cluster %s", name, v.Cluster))
			if v.Cluster == notDecided || clusterVersionAccepted(v.Cluster) {
				transient = true
			}
			break
		}
	}
	if len(answers) == 0 {
		return false, "no other member in the initial cluster"
	}
	return transient, strings.Join(answers, "; ")
}

// peerVersions reads a member's GET /version on its peer URL.
func peerVersions(ctx context.Context, hc *http.Client, peerURL string) (version.Versions, error) {
	var v version.Versions
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(peerURL, "/")+"/version", nil)
	if err != nil {
		return v, fmt.Errorf("build request: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return v, fmt.Errorf("get version: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return v, fmt.Errorf("read version: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("get version: %s", resp.Status)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("decode version: %w", err)
	}
	if v.Cluster == "" {
		return v, errors.New("no cluster version in the answer")
	}
	return v, nil
}

// clusterVersionAccepted: etcd's range for a join without a downgrade in
// progress, [MinClusterVersion, this etcd's major.minor].
func clusterVersionAccepted(v string) bool {
	got, ok := majorMinor(v)
	lo, ok1 := majorMinor(version.MinClusterVersion)
	hi, ok2 := majorMinor(version.Version)
	if !ok || !ok1 || !ok2 {
		return false
	}
	return !less(got, lo) && !less(hi, got)
}

func majorMinor(v string) ([2]int, bool) {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return [2]int{}, false
	}
	a, err1 := strconv.Atoi(parts[0])
	b, err2 := strconv.Atoi(parts[1])
	return [2]int{a, b}, err1 == nil && err2 == nil
}

func less(a, b [2]int) bool { return a[0] < b[0] || a[0] == b[0] && a[1] < b[1] }

// peerHTTPClient calls other members' peer URLs with this member's
// certificate, as etcd's own peer transport does.
func peerHTTPClient(tlsInfo transport.TLSInfo) (*http.Client, error) {
	tc, err := tlsInfo.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("peer TLS: %w", err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}, nil
}
