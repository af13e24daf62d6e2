package install

import (
	"github.com/lpmos/lpmos/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/agent/wire"
)

// The seed's network-config is read back by cloud-init itself (Debian 12's
// 22.4, `cloud-init devel net-convert`), rendered for ifupdown as Debian
// does, and the result must configure the NIC with the task's MAC.
func TestNoCloudNetworkConfigWithCloudInit(t *testing.T) {
	testenv.RequireTool(t, "cloud-init", "cloud-init")
	tests := []struct {
		name string
		net  *wire.StaticNetwork
		want []string // in /etc/network/interfaces.d/50-cloud-init
	}{
		{name: "ipv4", net: &wire.StaticNetwork{Address: "10.0.0.5/24", Gateway: "10.0.0.1", DNS: []string{"10.0.0.53", "9.9.9.9"}, MAC: "52:54:00:12:34:56"},
			want: []string{"auto lpmos0\n", "iface lpmos0 inet static\n", "address 10.0.0.5/24\n", "gateway 10.0.0.1\n", "dns-nameservers 10.0.0.53 9.9.9.9\n"}},
		{name: "ipv6 without gateway", net: &wire.StaticNetwork{Address: "2001:db8::5/64", DNS: []string{"2001:db8::53"}, MAC: "52:54:00:12:34:56"},
			want: []string{"iface lpmos0 inet6 static\n", "address 2001:db8::5/64\n", "dns-nameservers 2001:db8::53\n"}},
		{name: "address only", net: &wire.StaticNetwork{Address: "192.168.7.20/23", MAC: "52:54:00:12:34:56"},
			want: []string{"iface lpmos0 inet static\n", "address 192.168.7.20/23\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := NoCloudNetworkConfig(wire.InstallSpec{Network: tt.net})
			dir := t.TempDir()
			in := filepath.Join(dir, "network-config")
			if err := os.WriteFile(in, cfg, 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "out")
			if b, err := exec.Command("cloud-init", "devel", "net-convert", "-p", in, "-k", "yaml", "-D", "debian", "-d", out, "-O", "eni").CombinedOutput(); err != nil {
				t.Fatalf("cloud-init net-convert: %v\n%s\nnetwork-config:\n%s", err, b, cfg)
			}
			eni := string(readFile(t, filepath.Join(out, "etc/network/interfaces.d/50-cloud-init")))
			for _, w := range tt.want {
				if !strings.Contains(eni, "    "+w) && !strings.Contains(eni, "\n"+w) {
					t.Errorf("ifupdown config lacks %q:\n%s\nfrom:\n%s", w, eni, cfg)
				}
			}
			if strings.Contains(eni, "gateway") != (tt.net.Gateway != "") {
				t.Errorf("gateway line present = %v, want %v:\n%s", strings.Contains(eni, "gateway"), tt.net.Gateway != "", eni)
			}
			udev := string(readFile(t, filepath.Join(out, "etc/udev/rules.d/70-persistent-net.rules")))
			if !strings.Contains(udev, `ATTR{address}=="52:54:00:12:34:56", NAME="lpmos0"`) {
				t.Errorf("NIC not matched by MAC:\n%s", udev)
			}
		})
	}
	if cfg := NoCloudNetworkConfig(wire.InstallSpec{}); cfg != nil {
		t.Errorf("network-config without a network: %q", cfg)
	}
}
