package power

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// simBMC is a real IPMI BMC: OpenIPMI's ipmi_sim serving IPMI-over-LAN on
// 127.0.0.1:<free port>, with a chassis_control program (a shell script the
// test writes) that records power and boot device in files of dir.
type simBMC struct {
	dir  string
	port int
	user string
	pass string
}

// The chassis_control protocol of ipmi_sim: "<prog> get power boot" must
// print "power:1" lines; "<prog> set power 1" / "set boot pxe" /
// "set reset 1" apply. Every call is appended to calls.log.
const chassisControlScript = `#!/bin/sh
d=$(dirname "$0")
echo "$*" >> "$d/calls.log"
while [ $# -gt 0 ] && [ "$1" != get ] && [ "$1" != set ]; do shift; done
op=$1; shift
if [ "$op" = get ]; then
  for p in "$@"; do
    case $p in
      power) echo "power:$(cat "$d/power" 2>/dev/null || echo 0)";;
      boot) echo "boot:$(cat "$d/boot" 2>/dev/null || echo none)";;
      *) echo "$p:0";;
    esac
  done
  exit 0
fi
while [ $# -gt 1 ]; do
  case $1 in
    power) echo "$2" > "$d/power";;
    boot) echo "$2" > "$d/boot";;
  esac
  shift 2
done
`

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func needTools(t *testing.T) {
	t.Helper()
	for tool, pkg := range map[string]string{"ipmi_sim": "openipmi", "ipmitool": "ipmitool"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: apt-get install -y --no-install-recommends %s", tool, pkg)
		}
	}
}

// startSimBMC writes the lan config and .emu file (Debian's openipmi ships
// no example configs) and starts ipmi_sim with a fresh state dir.
func startSimBMC(t *testing.T) *simBMC { return startSim(t, true) }

// startSim starts ipmi_sim; without chassisControl the BMC has no power or
// boot control behind it (it refuses boot device overrides).
func startSim(t *testing.T, chassisControl bool) *simBMC {
	t.Helper()
	needTools(t)
	dir := t.TempDir()
	b := &simBMC{dir: dir, port: freeUDPPort(t), user: "admin", pass: "s3cret-pw"}
	cc := filepath.Join(dir, "chassis_control")
	lan := fmt.Sprintf(`name "lpmos-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s 0x20"
  user 2 true "%s" "%s" admin 10 none md2 md5 straight
`, b.port, cc, b.user, b.pass)
	if !chassisControl {
		lan = strings.Replace(lan, "  chassis_control", "  # chassis_control", 1)
	}
	emu := "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n"
	for name, body := range map[string]string{"lan.conf": lan, "bmc.emu": emu, "chassis_control": chassisControlScript} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "ipmi_sim.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// -n: stdin is not a tty (else ipmi_sim asserts).
	cmd := exec.Command("ipmi_sim", "-n", "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "bmc.emu"), "-s", state)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// Ready when ipmitool can log in.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := b.ipmitool("power", "status")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "ipmi_sim.log"))
			t.Fatalf("ipmi_sim not answering on 127.0.0.1:%d: %v %s\nipmi_sim log:\n%s", b.port, err, out, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return b
}

// ipmitool runs the Debian client (one we did not write) against the sim.
// -C 3: without it every call stalls ~10s on cipher suite discovery.
func (b *simBMC) ipmitool(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	full := append([]string{"-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", strconv.Itoa(b.port), "-U", b.user, "-E"}, args...)
	cmd := exec.CommandContext(ctx, "ipmitool", full...)
	cmd.Env = append(os.Environ(), "IPMI_PASSWORD="+b.pass) // -E: not on the command line
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// record reads what the chassis_control program was last told.
func (b *simBMC) record(name string) string {
	v, _ := os.ReadFile(filepath.Join(b.dir, name))
	return strings.TrimSpace(string(v))
}

func (b *simBMC) bmc() BMC {
	return BMC{Protocol: IPMI, Address: "127.0.0.1:" + strconv.Itoa(b.port), Username: b.user, Password: b.pass, Timeout: 10 * time.Second}
}

func TestIPMIAgainstIPMISim(t *testing.T) {
	sim := startSimBMC(t)
	d, err := New(sim.bmc())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	wantState := func(want State) {
		t.Helper()
		got, err := d.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("lpmos status %q, want %q", got, want)
		}
		out, err := sim.ipmitool("power", "status")
		if err != nil {
			t.Fatalf("ipmitool power status: %v %s", err, out)
		}
		if !strings.Contains(out, "Chassis Power is "+string(want)) {
			t.Fatalf("ipmitool says %q, want power %s", out, want)
		}
	}

	wantState(Off)
	if err := d.On(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sim.record("power"); got != "1" {
		t.Fatalf("chassis_control power %q after On, want 1", got)
	}
	wantState(On)

	if err := d.SetBootDevice(ctx, PXE, true); err != nil {
		t.Fatal(err)
	}
	if got := sim.record("boot"); got != "pxe" {
		t.Fatalf("chassis_control boot %q after PXE, want pxe", got)
	}
	out, err := sim.ipmitool("chassis", "bootparam", "get", "5")
	if err != nil || !strings.Contains(out, "Boot Device Selector : Force PXE") {
		t.Fatalf("ipmitool chassis bootparam get 5: %v\n%s", err, out)
	}
	if err := d.SetBootDevice(ctx, Disk, true); err != nil {
		t.Fatal(err)
	}
	// ipmi_sim's chassis_control names a forced hard drive "default".
	if got := sim.record("boot"); got != "default" {
		t.Fatalf("chassis_control boot %q after disk, want default", got)
	}
	if out, err := sim.ipmitool("chassis", "bootparam", "get", "5"); err != nil || !strings.Contains(out, "Force Boot from default Hard-Drive") {
		t.Fatalf("ipmitool chassis bootparam get 5 after disk: %v\n%s", err, out)
	}

	// Cycle: ipmi_sim turns a power cycle into "set power 0" and powers
	// the machine on again itself.
	if err := os.WriteFile(filepath.Join(sim.dir, "calls.log"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	if calls := sim.record("calls.log"); !strings.Contains(calls, "set power 0") {
		t.Fatalf("power cycle: chassis_control calls %q, want a power off", calls)
	}

	if err := d.Off(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sim.record("power"); got != "0" {
		t.Fatalf("chassis_control power %q after Off, want 0", got)
	}
	wantState(Off)

	// Cycle of a machine that is off powers it on.
	if err := d.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	wantState(On)
}

func TestIPMIErrors(t *testing.T) {
	sim := startSimBMC(t)
	ctx := context.Background()

	t.Run("wrong password", func(t *testing.T) {
		b := sim.bmc()
		b.Password = "wrong-pw-123"
		d, err := New(b)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = d.On(ctx)
		if err == nil {
			t.Fatal("want an error with a wrong password")
		}
		for _, s := range []string{"ipmi BMC 127.0.0.1:" + strconv.Itoa(sim.port), "chassis power on"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q lacks %q", err, s)
			}
		}
		if strings.Contains(err.Error(), "wrong-pw-123") || strings.Contains(err.Error(), sim.pass) {
			t.Errorf("error %q contains a password", err)
		}
		if el := time.Since(start); el > 12*time.Second {
			t.Errorf("a wrong password took %v", el)
		}
		if got := sim.record("power"); got == "1" {
			t.Error("the machine was powered on with a wrong password")
		}
		t.Logf("wrong password: %v", err)
	})

	t.Run("boot override refused", func(t *testing.T) {
		bare := startSim(t, false)
		d, err := New(bare.bmc())
		if err != nil {
			t.Fatal(err)
		}
		err = d.SetBootDevice(ctx, PXE, true)
		if err == nil {
			t.Fatal("want an error from a BMC that refuses the override")
		}
		for _, s := range []string{"ipmi BMC 127.0.0.1:" + strconv.Itoa(bare.port), "set boot device pxe", "boot device override refused", "completion code"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q lacks %q", err, s)
			}
		}
		t.Logf("refused: %v", err)
	})

	t.Run("unreachable is bounded", func(t *testing.T) {
		b := sim.bmc()
		b.Address = "127.0.0.1:" + strconv.Itoa(freeUDPPort(t)) // nothing listens
		b.Timeout = time.Second
		d, err := New(b)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = d.Status(ctx)
		if err == nil {
			t.Fatal("want an error from a port nobody serves")
		}
		if el := time.Since(start); el > 4*time.Second {
			t.Errorf("took %v with a 1s timeout", el)
		}
		if !strings.Contains(err.Error(), "ipmi BMC 127.0.0.1:") || !strings.Contains(err.Error(), "unreachable") || strings.Contains(err.Error(), sim.pass) {
			t.Errorf("error %q: want the BMC named and unreachable, no password", err)
		}
		t.Logf("unreachable: %v", err)
	})

	t.Run("silent BMC is bounded", func(t *testing.T) {
		// A socket that takes packets and never answers, like a hung BMC.
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		b := sim.bmc()
		b.Address = c.LocalAddr().String()
		b.Timeout = time.Second
		d, err := New(b)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = d.Off(ctx)
		if err == nil {
			t.Fatal("want an error from a BMC that never answers")
		}
		if el := time.Since(start); el > 4*time.Second {
			t.Errorf("took %v with a 1s timeout", el)
		}
		if !strings.Contains(err.Error(), "no answer") {
			t.Errorf("error %q: want no answer", err)
		}
		t.Logf("silent: %v (%v)", err, time.Since(start).Round(time.Millisecond))
	})
}
