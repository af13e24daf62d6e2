package agentapi

import (
	"net/http"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/agent/wire"
)

func TestHardwareLimits(t *testing.T) {
	t.Parallel()
	ok := func() wire.HardwareReport {
		return wire.HardwareReport{MACAddress: "52:54:00:00:00:01", Hardware: wire.Hardware{
			CPU:   wire.CPU{Model: "Intel Xeon", Sockets: 2, Cores: 32, Threads: 64},
			Disks: []wire.Disk{{Name: "sda", Model: "SAMSUNG", Serial: "S1"}},
			NICs:  []wire.NIC{{Name: "eth0", MAC: "52:54:00:00:00:01", Driver: "virtio_net", SpeedMbps: 1000}},
			DMI:   wire.DMI{Vendor: "QEMU", UUID: "0e5b3b9a-0000-0000-0000-000000000000"},
		}}
	}
	tests := []struct {
		name    string
		mod     func(*wire.HardwareReport)
		wantErr string // "" = accepted
	}{
		{"a real report", func(*wire.HardwareReport) {}, ""},
		{"cpu.model at the limit", func(r *wire.HardwareReport) { r.Hardware.CPU.Model = strings.Repeat("x", 256) }, ""},
		{"cpu.model over", func(r *wire.HardwareReport) { r.Hardware.CPU.Model = strings.Repeat("x", 1<<20) }, "hardware.cpu.model: 1048576 bytes, at most 256"},
		{"dmi.product over", func(r *wire.HardwareReport) { r.Hardware.DMI.Product = strings.Repeat("x", 257) }, "hardware.dmi.product: 257 bytes, at most 256"},
		{"dmi.uuid over", func(r *wire.HardwareReport) { r.Hardware.DMI.UUID = strings.Repeat("x", 65) }, "hardware.dmi.uuid: 65 bytes, at most 64"},
		{"disk serial over", func(r *wire.HardwareReport) {
			r.Hardware.Disks = append(r.Hardware.Disks, wire.Disk{Name: "sdb", Serial: strings.Repeat("s", 300)})
		}, "hardware.disks[1].serial: 300 bytes, at most 256"},
		{"disk name over", func(r *wire.HardwareReport) { r.Hardware.Disks[0].Name = strings.Repeat("n", 65) }, "hardware.disks[0].name: 65 bytes, at most 64"},
		{"nic driver over", func(r *wire.HardwareReport) { r.Hardware.NICs[0].Driver = strings.Repeat("d", 257) }, "hardware.nics[0].driver: 257 bytes, at most 256"},
		{"nic name over", func(r *wire.HardwareReport) { r.Hardware.NICs[0].Name = strings.Repeat("n", 100) }, "hardware.nics[0].name: 100 bytes, at most 64"},
		{"256 disks", func(r *wire.HardwareReport) { r.Hardware.Disks = make([]wire.Disk, 256) }, ""},
		{"257 disks", func(r *wire.HardwareReport) { r.Hardware.Disks = make([]wire.Disk, 257) }, "hardware.disks: 257 entries, at most 256"},
		{"129 nics", func(r *wire.HardwareReport) { r.Hardware.NICs = make([]wire.NIC, 129) }, "hardware.nics: 129 entries, at most 128"},
		{"negative sockets", func(r *wire.HardwareReport) { r.Hardware.CPU.Sockets = -1 }, "hardware.cpu.sockets: -1, want 0..1024"},
		{"absurd threads", func(r *wire.HardwareReport) { r.Hardware.CPU.Threads = 1 << 30 }, "hardware.cpu.threads: 1073741824, want 0..1048576"},
		{"negative memory", func(r *wire.HardwareReport) { r.Hardware.Memory.TotalGB = -5 }, "hardware.memory.total_gb: -5, want 0..1073741824"},
		{"nic speed absurd", func(r *wire.HardwareReport) { r.Hardware.NICs[0].SpeedMbps = 1 << 40 }, "hardware.nics[0].speed_mbps: 1099511627776, want -1..10000000"},
		{"long mac_address", func(r *wire.HardwareReport) { r.MACAddress = strings.Repeat("a", 100) }, "mac_address: 100 bytes, at most 64"},
		{"long hostname", func(r *wire.HardwareReport) { r.Hardware.Hostname = strings.Repeat("h", 254) }, "hardware.hostname: 254 bytes, at most 253"},
		{"boot_mode", func(r *wire.HardwareReport) { r.Hardware.BootMode = strings.Repeat("u", 17) }, "hardware.boot_mode: 17 bytes, at most 16"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep := ok()
			tc.mod(&rep)
			e := checkHardware(&rep)
			switch {
			case tc.wantErr == "" && e != nil:
				t.Fatalf("refused: %v", e)
			case tc.wantErr != "" && e == nil:
				t.Fatalf("accepted, want %q", tc.wantErr)
			case tc.wantErr != "" && (e.Code != http.StatusBadRequest || e.Msg != tc.wantErr):
				t.Fatalf("got %d %q, want 400 %q", e.Code, e.Msg, tc.wantErr)
			}
		})
	}
}

func TestHardwareLimitsOverHTTP(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	r := newRegion(t, st, "dc1", nil)
	mac := nextMAC()
	tests := []struct {
		name    string
		body    any
		want    int
		wantErr string
	}{
		{"over the body limit", []byte(`{"mac_address":"` + mac + `","hardware":{"cpu":{"model":"` + strings.Repeat("x", MaxHardwareBody) + `"}}}`),
			http.StatusRequestEntityTooLarge, "request body is larger than 65536 bytes"},
		{"a field over its limit", wire.HardwareReport{MACAddress: mac, Hardware: wire.Hardware{CPU: wire.CPU{Model: strings.Repeat("x", 32<<10)}}},
			http.StatusBadRequest, "hardware.cpu.model: 32768 bytes, at most 256"},
		{"too many disks", wire.HardwareReport{MACAddress: mac, Hardware: wire.Hardware{Disks: make([]wire.Disk, 300)}},
			http.StatusBadRequest, "hardware.disks: 300 entries, at most 256"},
		{"within limits", wire.HardwareReport{MACAddress: mac, Hardware: wire.Hardware{CPU: wire.CPU{Model: "Xeon"}}}, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out wire.Error
			if got := call(t, "POST", r.srv.URL+wire.PathHardware, "", tc.body, &out); got != tc.want {
				t.Fatalf("status %d, want %d (%s)", got, tc.want, out.Error)
			}
			if out.Error != tc.wantErr {
				t.Errorf("error %q, want %q", out.Error, tc.wantErr)
			}
		})
	}
	if _, err := st.GetMachine(t.Context(), mac); err != nil {
		t.Fatalf("the report within limits was not recorded: %v", err)
	}
}
