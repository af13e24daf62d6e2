package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// versionPeer is a fake member whose peer /version answers cluster
// versions from answers, one per call, repeating the last.
func versionPeer(t *testing.T, answers ...string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/version" {
			http.NotFound(w, r)
			return
		}
		i := int(calls.Add(1)) - 1
		v := answers[min(i, len(answers)-1)]
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"etcdserver":"3.7.3","etcdcluster":%q,"storage":"unknown"}`, v)
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

// incompatibleUntil is a start that fails as etcd's bootstrap does while
// the peer has not answered a decided version yet.
func incompatibleUntil(decided func() bool, starts *int) func() (*embed.Etcd, error) {
	return func() (*embed.Etcd, error) {
		*starts++
		if !decided() {
			return nil, errors.New(errIncompatible)
		}
		return nil, nil
	}
}

// A join whose start is refused while the other member's cluster version
// is "not_decided" starts again and succeeds once it is decided, logging
// each retry.
func TestJoinRetriesWhileClusterVersionUndecided(t *testing.T) {
	t.Parallel()
	peer, calls := versionPeer(t, notDecided, notDecided, "3.7.0")
	logs := newLogBuffer()
	log := slog.New(slog.NewTextHandler(logs, nil))
	starts := 0
	// The start succeeds once the peer answered its decided version.
	_, err := startJoining(context.Background(), log, 30*time.Second,
		incompatibleUntil(func() bool { return calls.Load() >= 3 }, &starts),
		func(ctx context.Context) (bool, string) {
			return remoteVersionsTransient(ctx, peer.Client(), "m1="+peer.URL+",m2=https://127.0.0.1:1", "m2")
		})
	if err != nil {
		t.Fatalf("join with a transiently undecided version: %v", err)
	}
	if starts != 4 {
		t.Errorf("starts = %d, want 4 (3 refused, then started)", starts)
	}
	if got := strings.Count(logs.String(), "has not decided its version yet"); got != 3 {
		t.Errorf("%d retry warnings, want 3:\n%s", got, logs)
	}
	if !strings.Contains(logs.String(), "m1: cluster not_decided") {
		t.Errorf("the retry warning does not say what the member answered:\n%s", logs)
	}
}

// A cluster version etcd really cannot join, a member that does not answer,
// or another start error fail at once: only the undecided version is
// retried.
func TestJoinDoesNotRetryRealIncompatibility(t *testing.T) {
	t.Parallel()
	peer, _ := versionPeer(t, "4.0.0")
	for _, tc := range []struct {
		name, cluster, want string
		startErr            error
	}{
		{"too high", "m1=" + peer.URL + ",m2=https://127.0.0.1:1", "m1: cluster 4.0.0", errors.New(errIncompatible)},
		{"unreachable", "m1=http://127.0.0.1:1,m2=https://127.0.0.1:1", "m1: get version", errors.New(errIncompatible)},
		{"other error", "m1=" + peer.URL + ",m2=https://127.0.0.1:1", "listen tcp", errors.New("listen tcp: address already in use")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			starts := 0
			_, err := startJoining(context.Background(), slog.New(slog.DiscardHandler), 30*time.Second,
				func() (*embed.Etcd, error) { starts++; return nil, tc.startErr },
				func(ctx context.Context) (bool, string) {
					return remoteVersionsTransient(ctx, peer.Client(), tc.cluster, "m2")
				})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if starts != 1 {
				t.Errorf("starts = %d, want 1 (no retry)", starts)
			}
		})
	}
}

// The retries are bounded: a version that stays undecided fails the join
// with a message that says so.
func TestJoinRetryIsBounded(t *testing.T) {
	t.Parallel()
	peer, _ := versionPeer(t, notDecided)
	starts := 0
	_, err := startJoining(context.Background(), slog.New(slog.DiscardHandler), time.Second,
		incompatibleUntil(func() bool { return false }, &starts),
		func(ctx context.Context) (bool, string) {
			return remoteVersionsTransient(ctx, peer.Client(), "m1="+peer.URL+",m2=https://127.0.0.1:1", "m2")
		})
	if err == nil || !strings.Contains(err.Error(), "still undecided") || !strings.Contains(err.Error(), errIncompatible) {
		t.Fatalf("err = %v, want the incompatibility and 'still undecided'", err)
	}
	if starts < 2 {
		t.Errorf("starts = %d, want at least one retry within the bound", starts)
	}
}

// The probe reads a real member's /version over its peer URL with the
// member's own certificate, as etcd's bootstrap does: a started member has
// decided its cluster version, which this etcd accepts.
func TestRemoteVersionsOfARealMember(t *testing.T) {
	t.Parallel()
	s, cfg, _ := openShortCertMember(t, time.Hour, newLogBuffer())
	hc, err := peerHTTPClient(s.tls)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := peerVersions(context.Background(), hc, cfg.PeerURL)
		if err != nil {
			t.Fatalf("peer /version: %v", err)
		}
		if v.Cluster != notDecided {
			if !clusterVersionAccepted(v.Cluster) {
				t.Fatalf("a member of this etcd answers cluster %q, which the range check refuses", v.Cluster)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the member's cluster version is still not decided after 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	ok, detail := remoteVersionsTransient(context.Background(), hc, "lpmos="+cfg.PeerURL+",joiner=https://127.0.0.1:1", "joiner")
	if !ok || !strings.Contains(detail, "lpmos: cluster 3.") {
		t.Fatalf("transient = %v (%s), want true with the member's decided version", ok, detail)
	}
}
