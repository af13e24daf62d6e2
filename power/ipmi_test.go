package power

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/power/ipmisim"
)

func TestIPMIAgainstIPMISim(t *testing.T) {
	sim := ipmisim.Start(t, true)
	d, err := New(simBMC(sim))
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
		out, err := sim.Ipmitool("power", "status")
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
	if got := sim.Record("power"); got != "1" {
		t.Fatalf("chassis_control power %q after On, want 1", got)
	}
	wantState(On)

	if err := d.SetBootDevice(ctx, PXE, true); err != nil {
		t.Fatal(err)
	}
	if got := sim.Record("boot"); got != "pxe" {
		t.Fatalf("chassis_control boot %q after PXE, want pxe", got)
	}
	out, err := sim.Ipmitool("chassis", "bootparam", "get", "5")
	if err != nil || !strings.Contains(out, "Boot Device Selector : Force PXE") {
		t.Fatalf("ipmitool chassis bootparam get 5: %v\n%s", err, out)
	}
	if err := d.SetBootDevice(ctx, Disk, true); err != nil {
		t.Fatal(err)
	}
	// ipmi_sim's chassis_control names a forced hard drive "default".
	if got := sim.Record("boot"); got != "default" {
		t.Fatalf("chassis_control boot %q after disk, want default", got)
	}
	if out, err := sim.Ipmitool("chassis", "bootparam", "get", "5"); err != nil || !strings.Contains(out, "Force Boot from default Hard-Drive") {
		t.Fatalf("ipmitool chassis bootparam get 5 after disk: %v\n%s", err, out)
	}

	// Cycle: ipmi_sim turns a power cycle into "set power 0" and powers
	// the machine on again itself.
	if err := os.WriteFile(filepath.Join(sim.Dir, "calls.log"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	if calls := sim.Record("calls.log"); !strings.Contains(calls, "set power 0") {
		t.Fatalf("power cycle: chassis_control calls %q, want a power off", calls)
	}

	if err := d.Off(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sim.Record("power"); got != "0" {
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
	sim := ipmisim.Start(t, true)
	ctx := context.Background()

	t.Run("wrong password", func(t *testing.T) {
		b := simBMC(sim)
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
		for _, s := range []string{"ipmi BMC 127.0.0.1:" + strconv.Itoa(sim.Port), "chassis power on"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q lacks %q", err, s)
			}
		}
		if strings.Contains(err.Error(), "wrong-pw-123") || strings.Contains(err.Error(), sim.Pass) {
			t.Errorf("error %q contains a password", err)
		}
		if el := time.Since(start); el > 12*time.Second {
			t.Errorf("a wrong password took %v", el)
		}
		if got := sim.Record("power"); got == "1" {
			t.Error("the machine was powered on with a wrong password")
		}
		t.Logf("wrong password: %v", err)
	})

	t.Run("boot override refused", func(t *testing.T) {
		bare := ipmisim.Start(t, false)
		d, err := New(simBMC(bare))
		if err != nil {
			t.Fatal(err)
		}
		err = d.SetBootDevice(ctx, PXE, true)
		if err == nil {
			t.Fatal("want an error from a BMC that refuses the override")
		}
		for _, s := range []string{"ipmi BMC 127.0.0.1:" + strconv.Itoa(bare.Port), "set boot device pxe", "boot device override refused", "completion code"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q lacks %q", err, s)
			}
		}
		t.Logf("refused: %v", err)
	})

	t.Run("unreachable is bounded", func(t *testing.T) {
		b := simBMC(sim)
		b.Address = "127.0.0.1:" + strconv.Itoa(ipmisim.FreeUDPPort(t)) // nothing listens
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
		if !strings.Contains(err.Error(), "ipmi BMC 127.0.0.1:") || !strings.Contains(err.Error(), "unreachable") || strings.Contains(err.Error(), sim.Pass) {
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
		b := simBMC(sim)
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

func simBMC(s *ipmisim.BMC) BMC {
	return BMC{Protocol: IPMI, Address: "127.0.0.1:" + strconv.Itoa(s.Port), Username: s.User, Password: s.Pass, Timeout: 10 * time.Second}
}
