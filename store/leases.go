package store

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// DHCPLease is an address handed out by a region's full DHCP mode:
// /leases/{mac}. Expired leases stay until they are overwritten; the DHCP
// server compares Expires itself.
type DHCPLease struct {
	MAC      string    `json:"mac"`
	IP       string    `json:"ip"`
	Expires  time.Time `json:"expires"`
	RegionID string    `json:"region_id,omitempty"`
}

// PutLease creates or replaces the lease of l.MAC.
func (s *Store) PutLease(ctx context.Context, l DHCPLease) error {
	mac, err := ParseMAC(l.MAC)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(l.IP); ip == nil || ip.To4() == nil {
		return fmt.Errorf("%w: lease address %q is not IPv4", ErrInvalid, l.IP)
	}
	l.MAC = mac
	if _, err := s.cli.Put(ctx, leaseKey(mac), mustJSON(l)); err != nil {
		return fmt.Errorf("store lease of %s: %w", mac, err)
	}
	return nil
}

// GetLease reads the lease of mac, or ErrNotFound.
func (s *Store) GetLease(ctx context.Context, mac string) (DHCPLease, error) {
	mac, err := ParseMAC(mac)
	if err != nil {
		return DHCPLease{}, err
	}
	resp, err := s.cli.Get(ctx, leaseKey(mac))
	if err != nil {
		return DHCPLease{}, fmt.Errorf("read lease of %s: %w", mac, err)
	}
	if len(resp.Kvs) == 0 {
		return DHCPLease{}, fmt.Errorf("%w: lease of %s", ErrNotFound, mac)
	}
	var l DHCPLease
	if err := json.Unmarshal(resp.Kvs[0].Value, &l); err != nil {
		return DHCPLease{}, fmt.Errorf("decode lease of %s: %w", mac, err)
	}
	return l, nil
}

// ListLeases returns every lease (expired ones too), sorted by MAC.
func (s *Store) ListLeases(ctx context.Context) ([]DHCPLease, error) {
	resp, err := s.cli.Get(ctx, prefixLeases, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	out := make([]DHCPLease, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var l DHCPLease
		if err := json.Unmarshal(kv.Value, &l); err != nil {
			s.log.Warn("store: undecodable lease", "key", string(kv.Key), "error", err)
			continue
		}
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MAC < out[j].MAC })
	return out, nil
}
