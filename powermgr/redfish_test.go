package powermgr_test

import (
	"context"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/power/redfishsim"
	"github.com/lpmos/lpmos/store"
	"github.com/lpmos/lpmos/store/storetest"
)

// The region's lifecycle and requests through a Redfish BMC (the
// redfishsim service, shaped like a real BMC's), and its bad answers.
func TestRedfishThroughTheRegion(t *testing.T) {
	st := storetest.New(t)
	logs := &lockedBuffer{}
	start(t, st, logs)
	ctx := context.Background()
	const sys = "System.Embedded.1"
	serve := func(setup func(*redfishsim.Server)) (*redfishsim.Server, *store.BMCInput) {
		f := redfishsim.New()
		if setup != nil {
			setup(f)
		}
		srv := httptest.NewServer(f)
		t.Cleanup(srv.Close)
		return f, &store.BMCInput{Protocol: "redfish", Address: srv.URL, Username: f.User, Password: f.Pass}
	}

	t.Run("lifecycle and a request", func(t *testing.T) {
		f, in := serve(nil)
		in.SystemID = sys
		task := createTask(t, st, "52:54:00:00:13:40", in)
		if _, err := st.ClaimTask(ctx, task.ID, ""); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, st, task.ID, "boot into PXE (attempt 1): next boot from pxe, powered on (it was off) (redfish BMC "+in.Address+" system "+sys+")")
		waitPower(t, st, task.ID, "on", "")
		transition(t, st, task.ID, wire.StatusPendingApproval, wire.StatusApproved, wire.StatusInstalling, wire.StatusCompleted)
		waitEvent(t, st, task.ID, "reboot into the installed OS: next boot from disk, power cycled")
		if _, err := st.RequestPower(ctx, task.ID, "off", "carol"); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, st, task.ID, "power off (requested by carol): powered off")
		waitPower(t, st, task.ID, "off", "")
		want := []string{sys + " boot Pxe Once", sys + " reset On", sys + " boot Hdd Once", sys + " reset PowerCycle", sys + " reset ForceOff"}
		if got := f.Took(); !slices.Equal(got, want) {
			t.Fatalf("the BMC did %v, want %v", got, want)
		}
		// Every operation logs out before it returns, but a power-state read
		// may be in flight at this moment: wait for it to end.
		deadline := time.Now().Add(10 * time.Second)
		for f.Sessions() != 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := f.Sessions(); n != 0 {
			t.Fatalf("%d Redfish sessions left open 10 s after the last operation", n)
		}
	})

	t.Run("several systems and no system id", func(t *testing.T) {
		f, in := serve(func(f *redfishsim.Server) { f.Systems = []string{"1", "2"} })
		task := createTask(t, st, "52:54:00:00:13:41", in)
		if _, err := st.ClaimTask(ctx, task.ID, ""); err != nil {
			t.Fatal(err)
		}
		ev := waitEvent(t, st, task.ID, "boot into PXE (attempt 1) failed", "redfish BMC "+in.Address, "2 systems (1, 2)", "name one as the system id")
		t.Logf("event: %s", ev.Message)
		waitPower(t, st, task.ID, "unknown", "2 systems (1, 2)")
		if got := f.Took(); len(got) != 0 {
			t.Fatalf("the BMC acted: %v", got)
		}
	})

	t.Run("boot override refused", func(t *testing.T) {
		_, in := serve(func(f *redfishsim.Server) { f.RefuseBoot = true })
		task := createTask(t, st, "52:54:00:00:13:42", in)
		if _, err := st.ClaimTask(ctx, task.ID, ""); err != nil {
			t.Fatal(err)
		}
		ev := waitEvent(t, st, task.ID, "failed after 2 tries", "boot device override refused", "400", "not in the list of acceptable values")
		t.Logf("event: %s", ev.Message)
	})

	t.Run("wrong password", func(t *testing.T) {
		_, in := serve(nil)
		in.Password = "rf-wrong-pw-55"
		task := createTask(t, st, "52:54:00:00:13:43", in)
		if _, err := st.ClaimTask(ctx, task.ID, ""); err != nil {
			t.Fatal(err)
		}
		ev := waitEvent(t, st, task.ID, "failed after 2 tries", "redfish BMC "+in.Address, "401")
		if strings.Contains(ev.Message, "rf-wrong-pw-55") {
			t.Fatal("the event holds the password")
		}
		checkNoPassword(t, st, logs, "rf-wrong-pw-55")
	})
}
