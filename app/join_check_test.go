package app_test

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/store"
)

// withFlag returns flags with flag's value replaced by value.
func withFlag(t *testing.T, flags []string, flag, value string) []string {
	t.Helper()
	out := slices.Clone(flags)
	for i, a := range out {
		if a == flag && i+1 < len(out) {
			out[i+1] = value
			return out
		}
	}
	t.Fatalf("no %s in %v", flag, flags)
	return nil
}

func flagValue(flags []string, flag string) string {
	for i, a := range flags {
		if a == flag && i+1 < len(flags) {
			return flags[i+1]
		}
	}
	return ""
}

// memberIDs is the sorted "id name role" list of a cluster status.
func memberIDs(st store.ClusterStatus) []string {
	var out []string
	for _, m := range st.Members {
		out = append(out, m.ID+" "+m.Name+" "+m.Role())
	}
	slices.Sort(out)
	return out
}

// TestJoinChecksBeforeJoining: `lpmos join` with a bad flag, a busy port
// or a failure right after its admission fails with a message naming the
// cause, and leaves the cluster exactly as it was (same members, one
// voter, writes work); the same join with good flags then succeeds with
// the same single-use token.
func TestJoinChecksBeforeJoining(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts lpmos processes")
	}
	m1, m2 := newClusterNode(t, "m1"), newClusterNode(t, "m2")
	m1.run(t, "serve", "--name", "m1")
	m1.waitHealthy(t, 30*time.Second)
	admin := m1.token(t)
	tok := joinToken(t, m1, "--ttl", "10m", "--single-use")
	before := memberIDs(members(t, m1, admin))

	hold := func(addr string) func() {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("hold %s: %v", addr, err)
		}
		return func() { _ = l.Close() }
	}
	peer, _ := url.Parse(flagValue(m2.flags, "--etcd-peer-url"))
	client, _ := url.Parse(flagValue(m2.flags, "--etcd-client-url"))
	cases := []struct {
		name  string
		flags []string
		busy  string // a TCP address held while the join runs
		extra []string
		want  []string // substrings of the error
	}{
		{name: "listen addr port out of range", flags: withFlag(t, m2.flags, "--listen-addr", "127.0.0.1:99999"),
			want: []string{"--listen-addr", "99999", "nothing was sent to the cluster"}},
		{name: "listen addr without port", flags: withFlag(t, m2.flags, "--listen-addr", "127.0.0.1"),
			want: []string{"--listen-addr", "missing port"}},
		{name: "peer url not https", flags: withFlag(t, m2.flags, "--etcd-peer-url", "http://127.0.0.1:2380"),
			want: []string{"--peer-url", "https://HOST:PORT"}},
		{name: "client url bad port", flags: withFlag(t, m2.flags, "--etcd-client-url", "https://127.0.0.1:70000"),
			want: []string{"--client-url", "between 1 and 65535"}},
		{name: "bad role", flags: withFlag(t, m2.flags, "--data-dir", m2.dataDir), extra: []string{"--role", "everything"},
			want: []string{"--role"}},
		{name: "bad name", flags: m2.flags, extra: []string{"--name", "m 2"}, want: []string{"--name"}},
		{name: "busy control plane port", flags: m2.flags, busy: strings.TrimPrefix(m2.url, "http://"),
			want: []string{"--listen-addr", "address already in use"}},
		{name: "busy api port", flags: m2.flags, busy: "127.0.0.1:" + flagValue(m2.flags, "--api-port"),
			want: []string{"--api-port", "address already in use"}},
		{name: "busy peer port", flags: m2.flags, busy: peer.Host, want: []string{"--peer-url", "address already in use"}},
		{name: "busy client port", flags: m2.flags, busy: client.Host, want: []string{"--client-url", "address already in use"}},
		{name: "failure after the admission", flags: m2.flags, extra: []string{"--fail-after-add"},
			want: []string{"--fail-after-add", "taken back"}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.busy != "" {
				defer hold(tc.busy)()
			}
			args := append([]string{"join", m1.url, "--token", tok, "--name", "m2", "--region-id", "dc2"}, tc.flags...)
			_, errOut, err := cliIn(append(args, tc.extra...)...)
			if err == nil {
				t.Fatalf("join succeeded; want a refusal\n%s", errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			st := members(t, m1, admin)
			if got := memberIDs(st); !slices.Equal(got, before) || st.Voters != 1 {
				t.Fatalf("cluster changed: %v (voters %d), was %v", got, st.Voters, before)
			}
			if _, err := createTask(t, m1, admin, fmt.Sprintf("52:54:00:00:0c:%02x", i), "dc1"); err != nil {
				t.Fatalf("write after the refused join: %v", err)
			}
		})
	}

	// The same join with good flags and the same single-use token works:
	// nothing was left half-added.
	m2.run(t, "join", m1.url, "--token", tok, "--name", "m2", "--region-id", "dc2")
	m2.waitHealthy(t, 40*time.Second)
	waitMembers(t, m1, admin, 30*time.Second, "2 voters", func(st store.ClusterStatus) bool {
		return len(st.Members) == 2 && st.Voters == 2
	})
	if _, err := createTask(t, m2, admin, "52:54:00:00:0c:ff", "dc2"); err != nil {
		t.Fatalf("write through the joined member: %v", err)
	}
}
