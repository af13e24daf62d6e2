package agentapi

import (
	"context"
	"testing"

	"github.com/lpmos/lpmos/agent/wire"
	"github.com/lpmos/lpmos/store"
)

// An approved task's static address reaches the agent in the install spec.
func TestApprovalCarriesStaticNetwork(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	addImage(t, st, "debian", "12", []byte("img"))
	r := newRegion(t, st, "dc1", nil)
	task, err := st.CreateTask(context.Background(), store.Spec{
		RegionID: "dc1", TargetMAC: nextMAC(), OSType: "debian", OSVersion: "12",
		Network: &wire.StaticNetwork{Address: "10.0.0.5/24", Gateway: "10.0.0.1", DNS: []string{"10.0.0.53"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	advance(t, r, task.ID, wire.StatusApproved)
	var ar wire.ApprovalResponse
	if code := call(t, "GET", r.srv.URL+wire.PathApproval+task.Spec.TargetMAC, sessionFor(t, st, task.ID), nil, &ar); code != 200 {
		t.Fatalf("approval: %d", code)
	}
	if ar.Install == nil || ar.Install.Network == nil {
		t.Fatalf("install spec without network: %+v", ar)
	}
	n := ar.Install.Network
	if n.Address != "10.0.0.5/24" || n.Gateway != "10.0.0.1" || len(n.DNS) != 1 || n.MAC != task.Spec.TargetMAC {
		t.Fatalf("network %+v", n)
	}
}
