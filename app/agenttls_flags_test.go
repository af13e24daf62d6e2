package app

import (
	"strings"
	"testing"
)

func TestAgentTLSFlags(t *testing.T) {
	tests := []struct {
		tls, bind string
		wantOn    bool
		wantAddr  string
		wantErr   string
	}{
		{tls: "on", wantOn: true, wantAddr: ":8081"},
		{tls: "", wantOn: true, wantAddr: ":8081"},
		{tls: "off", bind: "10.0.0.1", wantAddr: "10.0.0.1:8081"},
		{tls: "OFF", bind: "::1", wantAddr: "[::1]:8081"},
		{tls: "maybe", wantErr: "--agent-tls \"maybe\": want on or off"},
		{tls: "on", bind: "eth0", wantErr: "--api-bind \"eth0\": want an IP address"},
		{tls: "on", bind: "10.0.0.1:9000", wantErr: "the port is --api-port"},
	}
	for _, tt := range tests {
		t.Run(tt.tls+"/"+tt.bind, func(t *testing.T) {
			o := regionalOptions{agentTLS: tt.tls, apiBind: tt.bind}
			on, err := o.agentTLSOn()
			var addr string
			if err == nil {
				addr, err = o.apiListenAddr(8081)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || on != tt.wantOn || addr != tt.wantAddr {
				t.Fatalf("on=%v addr=%q err=%v, want on=%v addr=%q", on, addr, err, tt.wantOn, tt.wantAddr)
			}
		})
	}
}
