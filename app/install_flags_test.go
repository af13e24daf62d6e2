package app

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/pxe"
	"github.com/lpmos/lpmos/store"
	"github.com/spf13/cobra"
)

// --serial-console and --dhcp-answer-all: defaults, flags and LPMOS_* env.
func TestInstallRelatedServeFlags(t *testing.T) {
	tests := []struct {
		name        string
		args        []string
		env         map[string]string
		wantConsole string
		wantAll     bool
		wantArgs    string
	}{
		{name: "defaults", wantConsole: "ttyS0,115200", wantAll: true},
		{name: "flags", args: []string{"--serial-console=ttyS1,57600n8", "--dhcp-answer-all=false"}, wantConsole: "ttyS1,57600n8"},
		{name: "env", env: map[string]string{"LPMOS_SERIAL_CONSOLE": "ttyAMA0,115200", "LPMOS_DHCP_ANSWER_ALL": "false"}, wantConsole: "ttyAMA0,115200"},
		{name: "flag beats env", args: []string{"--dhcp-answer-all=true"}, env: map[string]string{"LPMOS_DHCP_ANSWER_ALL": "false"}, wantConsole: "ttyS0,115200", wantAll: true},
		{name: "agent kernel args", args: []string{"--agent-kernel-args", "no_timer_check  lpmos_x=1"}, wantConsole: "ttyS0,115200", wantAll: true, wantArgs: "no_timer_check|lpmos_x=1"},
		{name: "agent kernel args from env", env: map[string]string{"LPMOS_AGENT_KERNEL_ARGS": "noapic"}, wantConsole: "ttyS0,115200", wantAll: true, wantArgs: "noapic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var o serveOptions
			cmd := &cobra.Command{Use: "serve"}
			addServeFlags(cmd, &o)
			if err := cmd.Flags().Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if err := applyEnv(cmd.Flags()); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(strings.Fields(o.regional.kernelArgs), "|"); got != tt.wantArgs {
				t.Errorf("agent kernel args %q, want %q", got, tt.wantArgs)
			}
			if o.regional.serialConsole != tt.wantConsole {
				t.Errorf("serial console %q, want %q", o.regional.serialConsole, tt.wantConsole)
			}
			o.regional.rangeStart, o.regional.rangeEnd = "10.0.0.100", "10.0.0.200"
			f, err := o.regional.fullDHCP(&pxe.MemLeases{})
			if err != nil {
				t.Fatal(err)
			}
			if f.AnswerAll != tt.wantAll {
				t.Errorf("full DHCP AnswerAll = %v, want %v", f.AnswerAll, tt.wantAll)
			}
		})
	}
}

// `task create --ip/--gateway/--dns/--net-mac` fill the task's network
// field; without --ip the other three are refused with what to add.
func TestTaskCreateNetworkFlags(t *testing.T) {
	tests := []struct {
		args    []string
		want    string // fmt of the network, "" for nil
		wantErr string
	}{
		{args: nil},
		{args: []string{"--ip", "10.0.0.5/24", "--gateway", "10.0.0.1", "--dns", "10.0.0.53,9.9.9.9"}, want: "&{10.0.0.5/24 10.0.0.1 [10.0.0.53 9.9.9.9] }"},
		{args: []string{"--ip=10.0.0.5/24", "--net-mac", "52:54:00:aa:bb:cc"}, want: "&{10.0.0.5/24  [] 52:54:00:aa:bb:cc}"},
		{args: []string{"--gateway", "10.0.0.1"}, wantErr: "add --ip"},
	}
	for _, tt := range tests {
		var n staticNetFlags
		cmd := &cobra.Command{Use: "create"}
		n.addFlags(cmd)
		if err := cmd.Flags().Parse(tt.args); err != nil {
			t.Fatal(err)
		}
		got, err := n.network()
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%v: err %v, want %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		s := ""
		if got != nil {
			s = fmt.Sprint(got)
		}
		if s != tt.want {
			t.Errorf("%v: network %s, want %s", tt.args, s, tt.want)
		}
	}
}

func TestPrintInstallDetails(t *testing.T) {
	var b strings.Builder
	printInstallDetails(&b, store.Task{
		Spec: store.Spec{Network: &wire.StaticNetwork{Address: "10.0.0.5/24", Gateway: "10.0.0.1", DNS: []string{"10.0.0.53"}, MAC: "52:54:00:aa:bb:cc"}},
		Partitions: &store.PartitionTable{Attempt: 2, Partitions: []wire.Partition{
			{Number: 1, Name: "boot", Type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4", StartBytes: 1 << 20, SizeBytes: 1 << 30, FS: "ext4", Role: "boot"},
			{Number: 2, Type: "0x8e", StartBytes: 1<<30 + 1<<20, SizeBytes: 8 << 30},
		}},
	})
	got := b.String()
	for _, want := range []string{
		"network: 10.0.0.5/24 via 10.0.0.1, dns 10.0.0.53 on 52:54:00:aa:bb:cc\n",
		"partitions left on disk (attempt 2):\n",
		"  1  boot  0FC63DAF-8483-4772-8E79-3D69D8477DE4  1048576     1073741824  ext4  boot\n",
		"  2  -     0x8e                                  1074790400  8589934592  -     -\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	b.Reset()
	printInstallDetails(&b, store.Task{})
	if b.Len() != 0 {
		t.Errorf("details of a task without network or partitions: %q", b.String())
	}
}
