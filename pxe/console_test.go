package pxe

import (
	"errors"
	"strings"
	"testing"
)

// The agent's serial console runs at 115200 unless configured otherwise:
// at the kernel's default of 9600 BMC serial-over-LAN shows garbage.
func TestScriptSerialConsole(t *testing.T) {
	tests := []struct {
		name    string
		console string
		want    string // on the kernel line, followed by a space
		wantErr bool
	}{
		{name: "default", want: " console=tty0 console=ttyS0,115200 panic=-1 "},
		{name: "second port", console: "ttyS1,57600n8", want: " console=tty0 console=ttyS1,57600n8 panic=-1 "},
		{name: "arm pl011", console: "ttyAMA0,115200", want: " console=ttyAMA0,115200 "},
		{name: "space smuggles an argument", console: "ttyS0 init=/bin/sh", wantErr: true},
		{name: "iPXE variable", console: "${x}", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, d := range []Decision{{Action: ActionInstall, TaskID: testTask, Token: testToken}, {Action: ActionDiscover}} {
				s := baseScript(d)
				s.SerialConsole = tt.console
				got, err := RenderScript(s)
				if tt.wantErr {
					if !errors.Is(err, ErrInvalid) {
						t.Fatalf("err = %v, want ErrInvalid", err)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				kernel := ""
				for _, l := range strings.Split(got, "\n") {
					if strings.HasPrefix(l, "kernel ") {
						kernel = l
					}
				}
				if !strings.Contains(kernel, tt.want) || strings.Count(kernel, "console=ttyS0 ") != 0 {
					t.Errorf("kernel line %q, want %q and no speedless ttyS0", kernel, tt.want)
				}
			}
		})
	}
}
