package pxe

import (
	"errors"
	"strings"
	"testing"
)

func baseScript(d Decision) Script {
	return Script{
		Decision:  d,
		AgentURL:  "http://10.213.0.1:8081",
		KernelURL: "http://10.213.0.1:8081/boot/files/vmlinuz",
		InitrdURL: "http://10.213.0.1:8081/boot/files/initramfs.cpio.gz",
	}
}

const (
	testTask  = "0b7e2a9c-1f43-4d5e-9a61-2c3d4e5f6a7b"
	testToken = "tok_ABCdef-123"
)

func TestRenderScript(t *testing.T) {
	install := baseScript(Decision{Action: ActionInstall, TaskID: testTask, Token: testToken})
	install.ExtraArgs = []string{"console=ttyS0,115200n8", "lpmos.debug=1"}
	tests := []struct {
		name string
		in   Script
		want string
	}{
		{
			name: "install",
			in:   install,
			want: `#!ipxe
echo lpmos: booting the agent for task 0b7e2a9c-1f43-4d5e-9a61-2c3d4e5f6a7b
kernel http://10.213.0.1:8081/boot/files/vmlinuz initrd=initrd lpmos_client=http://10.213.0.1:8081 lpmos_task=0b7e2a9c-1f43-4d5e-9a61-2c3d4e5f6a7b lpmos_token=tok_ABCdef-123 lpmos_mac=${mac} ip=${ip}::${gateway}:${netmask}:::off console=tty0 console=ttyS0,115200 panic=-1 console=ttyS0,115200n8 lpmos.debug=1 || goto lpmos_failed
initrd --name initrd http://10.213.0.1:8081/boot/files/initramfs.cpio.gz || goto lpmos_failed
boot || goto lpmos_failed
:lpmos_failed
echo lpmos: boot failed, rebooting in 10 s
sleep 10
reboot
`,
		},
		{
			name: "discover",
			in:   baseScript(Decision{Action: ActionDiscover}),
			want: `#!ipxe
echo lpmos: booting the agent for discovery
kernel http://10.213.0.1:8081/boot/files/vmlinuz initrd=initrd lpmos_client=http://10.213.0.1:8081 lpmos_mac=${mac} ip=${ip}::${gateway}:${netmask}:::off console=tty0 console=ttyS0,115200 panic=-1 || goto lpmos_failed
initrd --name initrd http://10.213.0.1:8081/boot/files/initramfs.cpio.gz || goto lpmos_failed
boot || goto lpmos_failed
:lpmos_failed
echo lpmos: boot failed, rebooting in 10 s
sleep 10
reboot
`,
		},
		{
			name: "https agent with the CA pinned",
			in: func() Script {
				s := baseScript(Decision{Action: ActionDiscover})
				s.AgentURL = "https://10.213.0.1:8081"
				s.CAPin = strings.Repeat("ab", 32)
				return s
			}(),
			want: `#!ipxe
echo lpmos: booting the agent for discovery
kernel http://10.213.0.1:8081/boot/files/vmlinuz initrd=initrd lpmos_client=https://10.213.0.1:8081 lpmos_ca=sha256:` + strings.Repeat("ab", 32) + ` lpmos_mac=${mac} ip=${ip}::${gateway}:${netmask}:::off console=tty0 console=ttyS0,115200 panic=-1 || goto lpmos_failed
initrd --name initrd http://10.213.0.1:8081/boot/files/initramfs.cpio.gz || goto lpmos_failed
boot || goto lpmos_failed
:lpmos_failed
echo lpmos: boot failed, rebooting in 10 s
sleep 10
reboot
`,
		},
		{
			name: "local disk",
			in:   Script{Decision: Decision{Action: ActionLocal}},
			want: "#!ipxe\necho lpmos: nothing to install, booting from local disk\nexit 1\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RenderScript(tt.in)
			if err != nil {
				t.Fatalf("RenderScript: %v", err)
			}
			if got != tt.want {
				t.Fatalf("script:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestRenderScriptRejectsInjection(t *testing.T) {
	inst := func(mut func(*Script)) Script {
		s := baseScript(Decision{Action: ActionInstall, TaskID: testTask, Token: testToken})
		mut(&s)
		return s
	}
	tests := map[string]Script{
		"unknown action":           {Decision: Decision{Action: "reinstall"}},
		"empty action":             {},
		"task id newline":          inst(func(s *Script) { s.TaskID = testTask + "\nshell" }),
		"task id uppercase":        inst(func(s *Script) { s.TaskID = strings.ToUpper(testTask) }),
		"task id space":            inst(func(s *Script) { s.TaskID = "abc def" }),
		"task id variable":         inst(func(s *Script) { s.TaskID = "${net0/ip}" }),
		"task id empty":            inst(func(s *Script) { s.TaskID = "" }),
		"task id leading dash":     inst(func(s *Script) { s.TaskID = "-abc" }),
		"task id too long":         inst(func(s *Script) { s.TaskID = strings.Repeat("a", 65) }),
		"token semicolon":          inst(func(s *Script) { s.Token = "a;reboot" }),
		"token space":              inst(func(s *Script) { s.Token = "a b" }),
		"token dollar":             inst(func(s *Script) { s.Token = "${x}" }),
		"token empty":              inst(func(s *Script) { s.Token = "" }),
		"token with quote":         inst(func(s *Script) { s.Token = `a"b` }),
		"kernel url newline":       inst(func(s *Script) { s.KernelURL += "\nshell" }),
		"kernel url space":         inst(func(s *Script) { s.KernelURL += " init=/bin/sh" }),
		"kernel url variable":      inst(func(s *Script) { s.KernelURL = "http://${next-server}/vmlinuz" }),
		"kernel url ftp":           inst(func(s *Script) { s.KernelURL = "ftp://10.0.0.1/vmlinuz" }),
		"kernel url relative":      inst(func(s *Script) { s.KernelURL = "/boot/files/vmlinuz" }),
		"kernel url userinfo":      inst(func(s *Script) { s.KernelURL = "http://u:p@10.0.0.1/vmlinuz" }),
		"kernel url fragment":      inst(func(s *Script) { s.KernelURL = "http://10.0.0.1/vmlinuz#x" }),
		"kernel url empty":         inst(func(s *Script) { s.KernelURL = "" }),
		"initrd url pipe":          inst(func(s *Script) { s.InitrdURL += "||shell" }),
		"initrd url quote":         inst(func(s *Script) { s.InitrdURL += `'` }),
		"initrd url tab":           inst(func(s *Script) { s.InitrdURL += "\tx" }),
		"initrd url non-ascii":     inst(func(s *Script) { s.InitrdURL += "é" }),
		"agent url semicolon":      inst(func(s *Script) { s.AgentURL = "http://10.0.0.1;shell" }),
		"agent url braces":         inst(func(s *Script) { s.AgentURL = "http://10.0.0.1/{x}" }),
		"agent url no host":        inst(func(s *Script) { s.AgentURL = "http://" }),
		"agent url cr":             inst(func(s *Script) { s.AgentURL = "http://10.0.0.1\r" }),
		"extra arg space":          inst(func(s *Script) { s.ExtraArgs = []string{"a b"} }),
		"extra arg dollar":         inst(func(s *Script) { s.ExtraArgs = []string{"x=${ip}"} }),
		"extra arg empty":          inst(func(s *Script) { s.ExtraArgs = []string{""} }),
		"discover with task":       {Decision: Decision{Action: ActionDiscover, TaskID: testTask}, AgentURL: "http://a", KernelURL: "http://a/k", InitrdURL: "http://a/i"},
		"discover missing urls":    {Decision: Decision{Action: ActionDiscover}},
		"install missing agent":    inst(func(s *Script) { s.AgentURL = "" }),
		"kernel url backslash":     inst(func(s *Script) { s.KernelURL = `http://10.0.0.1/a\b` }),
		"kernel url ampersand":     inst(func(s *Script) { s.KernelURL = "http://10.0.0.1/a&&shell" }),
		"kernel url angle bracket": inst(func(s *Script) { s.KernelURL = "http://10.0.0.1/<x>" }),
		"ca pin short":             inst(func(s *Script) { s.AgentURL, s.CAPin = "https://10.0.0.1", "abcd" }),
		"ca pin uppercase":         inst(func(s *Script) { s.AgentURL, s.CAPin = "https://10.0.0.1", strings.Repeat("AB", 32) }),
		"ca pin with space":        inst(func(s *Script) { s.AgentURL, s.CAPin = "https://10.0.0.1", strings.Repeat("ab", 31)+" a" }),
		"ca pin on http agent url": inst(func(s *Script) { s.CAPin = strings.Repeat("ab", 32) }),
	}
	for name, s := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := RenderScript(s)
			if err == nil {
				t.Fatalf("RenderScript accepted it:\n%s", got)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			if got != "" {
				t.Fatalf("returned a script with the error")
			}
		})
	}
}
