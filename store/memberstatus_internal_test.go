package store

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
)

// countingProxy forwards TCP connections to target and counts them.
type countingProxy struct {
	l        net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
}

func newCountingProxy(t *testing.T, target string) *countingProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{l: l}
	var mu sync.Mutex
	var conns []net.Conn
	p.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			p.wg.Go(func() { _, _ = io.Copy(up, c); up.Close() })
			p.wg.Go(func() { _, _ = io.Copy(c, up); c.Close() })
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// The health poll asks every other member for its status every 3 s: the
// connection (and its TLS handshake at both ends) is kept from one poll to
// the next, and closed once the member is gone from the list.
func TestMemberStatusKeepsItsConnection(t *testing.T) {
	t.Parallel()
	s := openCAKeyMember(t, t.TempDir())
	defer s.Close()
	u, err := url.Parse(s.cfg.ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	// The proxy stands for another member: this member's own client
	// listener behind another address.
	p := newCountingProxy(t, u.Host)
	other := fmt.Sprintf("https://%s", p.l.Addr())
	otherID := uint64(s.etcd.Server.MemberID()) + 1
	ctx := context.Background()
	for i := range 5 {
		st, err := s.memberStatus(ctx, otherID, other)
		if err != nil {
			t.Fatalf("status %d: %v", i, err)
		}
		if st.Leader == 0 || st.Header.MemberId != uint64(s.etcd.Server.MemberID()) {
			t.Fatalf("status %d: leader %x member %x", i, st.Leader, st.Header.MemberId)
		}
	}
	if n := p.accepted.Load(); n != 1 {
		t.Errorf("5 status calls opened %d connections, want 1 kept", n)
	}
	// This member itself answers in process: no connection at all.
	if _, err := s.memberStatus(ctx, uint64(s.etcd.Server.MemberID()), other); err != nil {
		t.Fatal(err)
	}
	if n := p.accepted.Load(); n != 1 {
		t.Errorf("this member's own status dialled: %d connections", n)
	}
	// The member left the list: its client is closed, the next ask dials anew.
	s.closeMemberClients(map[string]bool{s.cfg.ClientURL: true})
	s.remoteMu.Lock()
	left := len(s.remote)
	s.remoteMu.Unlock()
	if left != 0 {
		t.Errorf("%d clients kept after their member left", left)
	}
	if _, err := s.memberStatus(ctx, otherID, other); err != nil {
		t.Fatal(err)
	}
	if n := p.accepted.Load(); n != 2 {
		t.Errorf("after the member left and came back: %d connections, want 2", n)
	}
	// ClusterStatus of a one-member cluster drops every kept client.
	if _, err := s.ClusterStatus(ctx); err != nil {
		t.Fatal(err)
	}
	s.remoteMu.Lock()
	left = len(s.remote)
	s.remoteMu.Unlock()
	if left != 0 {
		t.Errorf("ClusterStatus kept %d clients of members not in the list", left)
	}
}
