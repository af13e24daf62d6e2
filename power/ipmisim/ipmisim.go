// Package ipmisim runs a real IPMI BMC for tests: OpenIPMI's ipmi_sim (apt
// openipmi) serving IPMI-over-LAN on 127.0.0.1:<free port>, with a fresh
// state dir, a lan config and .emu file written here (Debian ships no
// example configs), and a chassis_control program that records power and
// boot device in files. Tests FAIL naming the apt package when ipmi_sim or
// ipmitool is missing.
package ipmisim

import (
	"context"
	"fmt"
	"github.com/lpmos/lpmos/internal/testenv"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BMC is a real IPMI BMC: OpenIPMI's ipmi_sim serving IPMI-over-LAN on
// 127.0.0.1:<free port>, with a chassis_control program (a shell script the
// test writes) that records power and boot device in files of dir.
type BMC struct {
	Dir  string
	Port int
	User string
	Pass string
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

// FreeUDPPort returns a loopback UDP port nobody listens on (at the time).
func FreeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func needTools(t testing.TB) {
	t.Helper()
	for tool, pkg := range map[string]string{"ipmi_sim": "openipmi", "ipmitool": "ipmitool"} {
		testenv.RequireTool(t, tool, pkg)
	}
}

// startSimBMC writes the lan config and .emu file (Debian's openipmi ships
// no example configs) and starts ipmi_sim with a fresh state dir.
// Start starts ipmi_sim (see the package doc); without chassisControl the BMC has no power or
// boot control behind it (it refuses boot device overrides).
func Start(t testing.TB, chassisControl bool) *BMC {
	t.Helper()
	needTools(t)
	dir := t.TempDir()
	b := &BMC{Dir: dir, Port: FreeUDPPort(t), User: "admin", Pass: "s3cret-pw"}
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
`, b.Port, cc, b.User, b.Pass)
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
	// Its own process group: ipmi_sim runs chassis_control as a child for
	// every power or boot call, and a script still running when only
	// ipmi_sim was killed wrote calls.log into dir while t.TempDir's
	// cleanup removed it ("directory not empty", CI of 460865f).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // ipmi_sim and its running scripts
		_ = cmd.Wait()
	})
	// Ready when ipmitool can log in.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := b.Ipmitool("power", "status")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "ipmi_sim.log"))
			t.Fatalf("ipmi_sim not answering on 127.0.0.1:%d: %v %s\nipmi_sim log:\n%s", b.Port, err, out, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return b
}

// ipmitool runs the Debian client (one we did not write) against the sim.
// -C 3: without it every call stalls ~10s on cipher suite discovery.
// Ipmitool runs Debian's ipmitool (a client lpmos did not write) against
// the BMC, the password passed in the environment (-E).
func (b *BMC) Ipmitool(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	full := append([]string{"-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", strconv.Itoa(b.Port), "-U", b.User, "-E"}, args...)
	cmd := exec.CommandContext(ctx, "ipmitool", full...)
	cmd.Env = append(os.Environ(), "IPMI_PASSWORD="+b.Pass) // -E: not on the command line
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// record reads what the chassis_control program was last told.
// Record reads a file the chassis_control program keeps in Dir: "power"
// (0/1), "boot" (pxe, default = disk, none) or "calls.log".
func (b *BMC) Record(name string) string {
	v, _ := os.ReadFile(filepath.Join(b.Dir, name))
	return strings.TrimSpace(string(v))
}
