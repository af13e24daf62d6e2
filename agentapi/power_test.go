package agentapi

import (
	"context"
	"testing"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

// A task with a BMC tells its agent the region reboots the machine
// (power_managed); a task without one does not (the agent reboots itself).
func TestApprovalSaysPowerManaged(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	addImage(t, st, "debian", "12", []byte("img"))
	r := newRegion(t, st, "dc1", nil)
	for _, withBMC := range []bool{true, false} {
		var opts []store.CreateOption
		if withBMC {
			opts = append(opts, store.WithBMC(&store.BMCInput{Protocol: "ipmi", Address: "127.0.0.1:9", Username: "admin", Password: "pw"}))
		}
		task, err := st.CreateTask(context.Background(), store.Spec{RegionID: "dc1", TargetMAC: nextMAC(), OSType: "debian", OSVersion: "12"}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		advance(t, r, task.ID, wire.StatusApproved)
		var ar wire.ApprovalResponse
		if code := call(t, "GET", r.srv.URL+wire.PathApproval+task.Spec.TargetMAC, sessionFor(t, st, task.ID), nil, &ar); code != 200 || ar.Install == nil {
			t.Fatalf("approval: %d %+v", code, ar)
		}
		if ar.Install.PowerManaged != withBMC {
			t.Fatalf("with BMC %v: power_managed %v", withBMC, ar.Install.PowerManaged)
		}
	}
}
