package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/lpmos/lpmos/internal/health"
	"github.com/lpmos/lpmos/store"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
)

// memberFile is <data-dir>/member.json: what a member was started with, so
// a plain `lpmos serve --data-dir D` restarts it as the same member (same
// name and URLs the cluster knows it by) serving the same region.
type memberFile struct {
	Name      string `json:"name"`
	ClientURL string `json:"etcd_client_url"`
	PeerURL   string `json:"etcd_peer_url"`
	RegionID  string `json:"region_id"`
}

const memberFileName = "member.json"

func readMemberFile(dataDir string) (memberFile, error) {
	var m memberFile
	data, err := os.ReadFile(filepath.Join(dataDir, memberFileName))
	if err != nil {
		return m, fmt.Errorf("read member settings: %w", err)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("decode %s: %w", filepath.Join(dataDir, memberFileName), err)
	}
	return m, nil
}

// loadMemberFile fills the member flags the user did not set from the data
// dir's member.json, if there is one.
func loadMemberFile(fs *pflag.FlagSet, o *serveOptions) error {
	if len(o.etcdEndpoints) > 0 {
		return nil
	}
	m, err := readMemberFile(o.dataDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	set := func(flag string, dst *string, v string) {
		if v != "" && !fs.Changed(flag) {
			*dst = v
		}
	}
	set("name", &o.name, m.Name)
	set("etcd-client-url", &o.etcdClientURL, m.ClientURL)
	set("etcd-peer-url", &o.etcdPeerURL, m.PeerURL)
	set("region-id", &o.regionID, m.RegionID)
	return nil
}

func saveMemberFile(o serveOptions) error {
	data, err := json.MarshalIndent(memberFile{Name: o.name, ClientURL: o.etcdClientURL, PeerURL: o.etcdPeerURL, RegionID: o.regionID}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode member settings: %w", err)
	}
	return writeFileAtomic(filepath.Join(o.dataDir, memberFileName), append(data, '\n'), 0o600)
}

// clusterHealth keeps the last membership status for /api/v1/health.
type clusterHealth struct {
	mu       sync.Mutex
	services []health.Service
}

func (c *clusterHealth) snapshot() []health.Service {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]health.Service(nil), c.services...)
}

// startClusterWatch reports every member's health ("etcd/member/<name>")
// from a status poll every few seconds, and stops the process when this
// member is removed from the cluster (its data dir is then tombstoned).
func startClusterWatch(ctx context.Context, g *errgroup.Group, st *store.Store, reg *health.Registry) {
	ch := &clusterHealth{}
	reg.AddSource(ch.snapshot)
	g.Go(func() error {
		t := time.NewTicker(3 * time.Second)
		defer t.Stop()
		for {
			pollClusterHealth(ctx, st, ch)
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	})
	g.Go(func() error {
		select {
		case <-ctx.Done():
			return nil
		case <-st.Lost():
			err := st.LostErr()
			reg.Set("etcd", health.Failed, err)
			return err
		}
	})
}

func pollClusterHealth(ctx context.Context, st *store.Store, ch *clusterHealth) {
	pctx, cancel := context.WithTimeout(ctx, 2500*time.Millisecond)
	defer cancel()
	cs, err := st.ClusterStatus(pctx)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		// Keep the last known members, marked unknown: without quorum the
		// member list itself cannot be read.
		ch.mu.Lock()
		for i := range ch.services {
			if ch.services[i].State == health.Running {
				ch.services[i].State = health.Degraded
				ch.services[i].Since = time.Now().UTC()
			}
			ch.services[i].Error = "membership unknown: " + err.Error()
		}
		ch.mu.Unlock()
		return
	}
	now := time.Now().UTC()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	old := map[string]health.Service{}
	for _, s := range ch.services {
		old[s.Name] = s
	}
	var out []health.Service
	for _, m := range cs.Members {
		name := m.Name
		if name == "" {
			name = m.ID
		}
		s := health.Service{Name: "etcd/member/" + name, State: health.Running, Error: m.Error, Since: now}
		switch {
		case m.Name == "":
			s.State = health.Starting
		case !m.Healthy:
			s.State = health.Failed
		}
		parts := []string{m.Role()}
		if m.Leader {
			parts = append(parts, "leader")
		}
		if m.Self {
			parts = append(parts, "this process")
		}
		if len(m.Regions) > 0 {
			parts = append(parts, "regions "+strings.Join(m.Regions, ","))
		}
		s.Detail = strings.Join(parts, ", ")
		if o, ok := old[s.Name]; ok && o.State == s.State {
			s.Since = o.Since
		}
		out = append(out, s)
	}
	ch.services = out
}
