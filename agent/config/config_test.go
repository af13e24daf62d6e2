package config

import (
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	tests := []struct {
		name    string
		cmdline string
		want    Config
		wantErr string
	}{
		{
			name: "iPXE line with static ip",
			cmdline: `BOOT_IMAGE=vmlinuz initrd=initrd.img console=ttyS0 panic=-1 lpmos_client=http://10.55.0.1:8081/ lpmos_task=t-42 ` +
				`lpmos_token=s3cret lpmos_mac=52:54:00:AA:00:01 ip=10.55.0.10:10.55.0.1:10.55.0.1:255.255.255.0:vm1:eth0:off:10.55.0.1`,
			want: Config{
				ServerURL: "http://10.55.0.1:8081", TaskID: "t-42", Token: "s3cret", MAC: "52:54:00:aa:00:01", SysRoot: "/",
				IP: IP{
					Mode: IPStatic, Client: net.IPv4(10, 55, 0, 10).To4(), Server: net.IPv4(10, 55, 0, 1).To4(),
					Gateway: net.IPv4(10, 55, 0, 1).To4(), Netmask: net.CIDRMask(24, 32), Hostname: "vm1", Device: "eth0",
					DNS: []net.IP{net.IPv4(10, 55, 0, 1).To4()},
				},
			},
		},
		{
			name:    "dhcp, BOOTIF mac, disk and poweroff",
			cmdline: "lpmos_client=http://regional:8081 ip=dhcp BOOTIF=01-52-54-00-aa-00-02 lpmos_disk=/dev/vda lpmos_poweroff=1 quiet",
			want: Config{
				ServerURL: "http://regional:8081", MAC: "52:54:00:aa:00:02", Disk: "/dev/vda", PowerOff: true, SysRoot: "/",
				IP: IP{Mode: IPDHCP},
			},
		},
		{
			name:    "quoted value and discovery without task",
			cmdline: `lpmos_client="http://[fd55::1]:8081" lpmos_mac=52:54:00:aa:00:03 -- init args`,
			want:    Config{ServerURL: "http://[fd55::1]:8081", MAC: "52:54:00:aa:00:03", SysRoot: "/"},
		},
		{
			name:    "lpmos_mac wins over BOOTIF",
			cmdline: "BOOTIF=01-aa-aa-aa-aa-aa-aa lpmos_mac=bb:bb:bb:bb:bb:bb lpmos_client=http://x",
			want:    Config{ServerURL: "http://x", MAC: "bb:bb:bb:bb:bb:bb", SysRoot: "/"},
		},
		{
			name:    "https with the CA pinned",
			cmdline: "lpmos_client=https://10.55.0.1:8081 lpmos_ca=sha256:0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a lpmos_mac=52:54:00:aa:00:04",
			want:    Config{ServerURL: "https://10.55.0.1:8081", CAPin: "sha256:0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a", MAC: "52:54:00:aa:00:04", SysRoot: "/"},
		},
		{name: "ca pin on plain http", cmdline: "lpmos_client=http://x lpmos_ca=sha256:0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a", wantErr: "not https but a CA is pinned"},
		{name: "ca pin without prefix", cmdline: "lpmos_client=https://x lpmos_ca=0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a", wantErr: "want sha256:<64 hex digits>"},
		{name: "ca pin too short", cmdline: "lpmos_client=https://x lpmos_ca=sha256:abcd", wantErr: "want sha256:<64 hex digits>"},
		{name: "ca pin not hex", cmdline: "lpmos_client=https://x lpmos_ca=sha256:zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", wantErr: "want sha256:<64 hex digits>"},
		{name: "no server", cmdline: "console=ttyS0 lpmos_task=t", wantErr: "no lpmos_client="},
		{name: "bad server", cmdline: "lpmos_client=ftp://x", wantErr: "want http(s)"},
		{name: "bad mac", cmdline: "lpmos_client=http://x lpmos_mac=zz", wantErr: `mac "zz"`},
		{name: "bad ip", cmdline: "lpmos_client=http://x ip=10.0.0.300::::::off", wantErr: "client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCmdline(tt.cmdline)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseIP(t *testing.T) {
	v4 := func(a, b, c, d byte) net.IP { return net.IPv4(a, b, c, d).To4() }
	tests := []struct {
		in      string
		want    IP
		wantErr bool
	}{
		{in: "dhcp", want: IP{Mode: IPDHCP}},
		{in: "off", want: IP{Mode: IPOff}},
		{in: "::::host1:eth1:dhcp", want: IP{Mode: IPDHCP, Hostname: "host1", Device: "eth1"}},
		{in: "192.168.1.20::192.168.1.1:24::enp1s0:none", want: IP{
			Mode: IPStatic, Client: v4(192, 168, 1, 20), Gateway: v4(192, 168, 1, 1), Netmask: net.CIDRMask(24, 32), Device: "enp1s0",
		}},
		{in: "10.1.2.3", want: IP{Mode: IPStatic, Client: v4(10, 1, 2, 3), Netmask: net.CIDRMask(8, 32)}}, // classful default
		{in: ":::::eth0:off", wantErr: true},
		{in: "10.0.0.2::10.0.0.1:255.0.255.0::eth0:off", wantErr: true},
		{in: "10.0.0.2::10.0.0.1:33::eth0:off", wantErr: true},
		{in: "[fd00::2]::[fd00::1]:64::eth0:off", wantErr: true},
		{in: "10.0.0.2:::::eth0:carrier-pigeon", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseIP(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSplitCmdline(t *testing.T) {
	got := SplitCmdline("  a=1 b=\"x y\"\tc \"d=e f\"\n")
	want := []string{"a=1", "b=x y", "c", "d=e f"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestFromArgs(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    Config
		wantErr bool
	}{
		{name: "defaults: the seed's demo", want: Config{ServerURL: DefaultServerURL, SysRoot: "/"}},
		{
			name: "env", env: map[string]string{"LPMOS_AGENT_SERVER": "http://r1:9000/", "LPMOS_AGENT_TOKEN": "tok", "LPMOS_AGENT_TASK": "t1"},
			want: Config{ServerURL: "http://r1:9000", Token: "tok", TaskID: "t1", SysRoot: "/"},
		},
		{
			name: "the seed's REGIONAL_CLIENT_URL, LPMOS_AGENT_SERVER wins", env: map[string]string{"REGIONAL_CLIENT_URL": "http://seed:1", "LPMOS_AGENT_SERVER": "http://r1:9000"},
			want: Config{ServerURL: "http://r1:9000", SysRoot: "/"},
		},
		{
			name: "seed variable alone", env: map[string]string{"REGIONAL_CLIENT_URL": "http://seed:1"},
			want: Config{ServerURL: "http://seed:1", SysRoot: "/"},
		},
		{
			// The lpmos CLI's variables (the admin token) are not the agent's.
			name: "LPMOS_TOKEN and LPMOS_TASK are ignored", env: map[string]string{"LPMOS_TOKEN": "admin-secret", "LPMOS_TASK": "t1", "LPMOS_CA_PIN": "x"},
			want: Config{ServerURL: DefaultServerURL, SysRoot: "/"},
		},
		{
			name: "flags win over env",
			args: []string{"--server", "http://r2:8081", "--disk", "/tmp/disk.img", "--mac", "AC-1F-6B-4A-10-01", "--task", "t2", "--token", "t", "--poweroff", "--hardware-json", "--sysroot", "/fx"},
			env:  map[string]string{"REGIONAL_CLIENT_URL": "http://r1:9000"},
			want: Config{ServerURL: "http://r2:8081", Disk: "/tmp/disk.img", MAC: "ac:1f:6b:4a:10:01", TaskID: "t2", Token: "t", PowerOff: true, HardwareJSON: true, SysRoot: "/fx"},
		},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: true},
		{name: "stray argument", args: []string{"now"}, wantErr: true},
		{name: "bad env url", env: map[string]string{"REGIONAL_CLIENT_URL": "localhost:8081"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromArgs(tt.args, env(tt.env), io.Discard)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
