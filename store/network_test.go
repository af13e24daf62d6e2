package store_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

func TestSpecNetworkValidation(t *testing.T) {
	t.Parallel()
	base := func(n *wire.StaticNetwork) store.Spec {
		return store.Spec{RegionID: "dc1", TargetMAC: "00-1A-2B-3C-4D-5E", OSType: "debian", OSVersion: "12", Network: n}
	}
	good := []struct {
		in   wire.StaticNetwork
		want wire.StaticNetwork
	}{
		{wire.StaticNetwork{Address: "10.0.0.5/24", Gateway: "10.0.0.1", DNS: []string{"10.0.0.53"}},
			wire.StaticNetwork{Address: "10.0.0.5/24", Gateway: "10.0.0.1", DNS: []string{"10.0.0.53"}, MAC: "00:1a:2b:3c:4d:5e"}},
		{wire.StaticNetwork{Address: "2001:DB8::5/64", Gateway: "fe80::1", MAC: "52-54-00-AA-BB-CC"},
			wire.StaticNetwork{Address: "2001:db8::5/64", Gateway: "fe80::1", MAC: "52:54:00:aa:bb:cc"}},
		{wire.StaticNetwork{Address: "192.0.2.7/32"}, wire.StaticNetwork{Address: "192.0.2.7/32", MAC: "00:1a:2b:3c:4d:5e"}},
	}
	for _, g := range good {
		n := g.in
		sp := base(&n)
		if err := sp.Validate(); err != nil {
			t.Errorf("%+v: %v", g.in, err)
			continue
		}
		if got := *sp.Network; got.Address != g.want.Address || got.Gateway != g.want.Gateway || got.MAC != g.want.MAC ||
			strings.Join(got.DNS, ",") != strings.Join(g.want.DNS, ",") {
			t.Errorf("%+v canonicalized to %+v, want %+v", g.in, got, g.want)
		}
	}
	bad := []struct {
		n    wire.StaticNetwork
		want string
	}{
		{wire.StaticNetwork{Address: "10.0.0.5"}, "network.address"},
		{wire.StaticNetwork{Address: "10.0.0.300/24"}, "network.address"},
		{wire.StaticNetwork{Address: "10.0.0.0/24"}, "network.address \"10.0.0.0/24\" is the network or broadcast"},
		{wire.StaticNetwork{Address: "10.0.0.255/24"}, "broadcast"},
		{wire.StaticNetwork{Address: "224.0.0.5/24"}, "not a host address"},
		{wire.StaticNetwork{Address: "10.0.0.5/24", Gateway: "10.0.1.1"}, "network.gateway 10.0.1.1 is outside"},
		{wire.StaticNetwork{Address: "10.0.0.5/24", Gateway: "gw"}, "network.gateway \"gw\" is not an IP"},
		{wire.StaticNetwork{Address: "10.0.0.5/24", Gateway: "2001:db8::1"}, "not the same IP version"},
		{wire.StaticNetwork{Address: "10.0.0.5/24", Gateway: "10.0.0.5"}, "is network.address itself"},
		{wire.StaticNetwork{Address: "10.0.0.5/24", DNS: []string{"10.0.0.53", "dns.example"}}, "network.dns \"dns.example\""},
		{wire.StaticNetwork{Address: "10.0.0.5/24", DNS: make([]string, 9)}, "network.dns has 9 servers"},
		{wire.StaticNetwork{Address: "10.0.0.5/24", MAC: "nope"}, "network.mac \"nope\""},
	}
	for _, b := range bad {
		n := b.n
		sp := base(&n)
		err := sp.Validate()
		if !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%+v: err %v, want ErrInvalid mentioning %q", b.n, err, b.want)
		}
	}
}
