package app_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/store"
)

// BenchmarkClusterPut is the latency of sequential 128-byte Puts of an
// external etcd client (mutual TLS with a member certificate) to lpmos
// members on loopback: one member, then three (through the leader and
// through a follower). Each sub-benchmark reports its p50 and p99.
//
//	go test -run '^$' -bench ClusterPut -benchtime 300x ./app/
func BenchmarkClusterPut(b *testing.B) {
	m1, m2, m3 := newClusterNode(b, "m1"), newClusterNode(b, "m2"), newClusterNode(b, "m3")
	nodes := []*clusterNode{m1, m2, m3}
	m1.run(b, "serve", "--name", "m1")
	m1.waitHealthy(b, 30*time.Second)
	admin := m1.token(b)
	b.Run("1member", func(b *testing.B) { benchPut(b, tlsStore(b, m1, m1.clientURL)) })

	tok := joinToken(b, m1, "--ttl", "10m", "--reusable")
	m2.run(b, "join", m1.url, "--token", tok, "--name", "m2", "--region-id", "dc2")
	m2.waitHealthy(b, 40*time.Second)
	m3.run(b, "join", m1.url, "--token", tok, "--name", "m3", "--region-id", "dc3")
	m3.waitHealthy(b, 40*time.Second)
	st := waitMembers(b, m1, admin, 20*time.Second, "3 healthy voters", func(st store.ClusterStatus) bool {
		if len(st.Members) != 3 || st.Voters != 3 || st.Leader == "" {
			return false
		}
		for _, m := range st.Members {
			if !m.Healthy || m.Learner {
				return false
			}
		}
		return true
	})
	leader := findNode(nodes, st.Leader)
	follower := nodes[(slices.Index(nodes, leader)+1)%len(nodes)]
	b.Run("3members/leader", func(b *testing.B) { benchPut(b, tlsStore(b, m1, leader.clientURL)) })
	b.Run("3members/follower", func(b *testing.B) { benchPut(b, tlsStore(b, m1, follower.clientURL)) })
}

// benchPut times b.N sequential Puts through st and reports p50 and p99.
func benchPut(b *testing.B, st *store.Store) {
	val := strings.Repeat("x", 128)
	var ds []time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		if _, err := st.Client().Put(context.Background(), fmt.Sprintf("/bench/put/%d", i), val); err != nil {
			b.Fatalf("put: %v", err)
		}
		ds = append(ds, time.Since(start))
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds())/1000, "p99-ms")
}
