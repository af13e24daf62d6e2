package app

import (
	"testing"

	"github.com/lpmos/lpmos/pxe"
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
	}{
		{name: "defaults", wantConsole: "ttyS0,115200", wantAll: true},
		{name: "flags", args: []string{"--serial-console=ttyS1,57600n8", "--dhcp-answer-all=false"}, wantConsole: "ttyS1,57600n8"},
		{name: "env", env: map[string]string{"LPMOS_SERIAL_CONSOLE": "ttyAMA0,115200", "LPMOS_DHCP_ANSWER_ALL": "false"}, wantConsole: "ttyAMA0,115200"},
		{name: "flag beats env", args: []string{"--dhcp-answer-all=true"}, env: map[string]string{"LPMOS_DHCP_ANSWER_ALL": "false"}, wantConsole: "ttyS0,115200", wantAll: true},
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
