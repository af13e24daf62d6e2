package pxe

import (
	"context"
	"net"
	"sort"
	"sync"
	"time"
)

// Lease is one address handed out in full DHCP mode.
type Lease struct {
	MAC     net.HardwareAddr `json:"mac"`
	IP      net.IP           `json:"ip"`
	Expires time.Time        `json:"expires"`
}

// Expired reports whether the lease has run out at now.
func (l Lease) Expired(now time.Time) bool { return !now.Before(l.Expires) }

// Leases stores full-mode DHCP leases, keyed by MAC. lpmos backs it with etcd
// (/leases/{mac}); MemLeases is an in-memory implementation.
//
// The DHCP server serialises its own Get/List/Put calls, so an implementation
// needs no transaction for one server; two servers handing out the same range
// would (do not configure that).
type Leases interface {
	// Get returns the lease of mac; ok is false when there is none.
	Get(ctx context.Context, mac net.HardwareAddr) (l Lease, ok bool, err error)
	// Put creates or replaces the lease of l.MAC.
	Put(ctx context.Context, l Lease) error
	// List returns every lease (expired ones too), to find a free address.
	List(ctx context.Context) ([]Lease, error)
}

// MemLeases is an in-memory Leases, safe for concurrent use. The zero value
// is ready.
type MemLeases struct {
	mu sync.Mutex
	m  map[string]Lease
}

var _ Leases = (*MemLeases)(nil)

// Get implements Leases.
func (m *MemLeases) Get(_ context.Context, mac net.HardwareAddr) (Lease, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.m[mac.String()]
	return cloneLease(l), ok, nil
}

// Put implements Leases.
func (m *MemLeases) Put(_ context.Context, l Lease) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = make(map[string]Lease)
	}
	m.m[l.MAC.String()] = cloneLease(l)
	return nil
}

// List implements Leases, sorted by MAC.
func (m *MemLeases) List(_ context.Context) ([]Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Lease, 0, len(m.m))
	for _, l := range m.m {
		out = append(out, cloneLease(l))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MAC.String() < out[j].MAC.String() })
	return out, nil
}

func cloneLease(l Lease) Lease {
	return Lease{
		MAC:     append(net.HardwareAddr(nil), l.MAC...),
		IP:      append(net.IP(nil), l.IP...),
		Expires: l.Expires,
	}
}
