package ui_test

import "testing"

// heavy lets one at a time of the tests that load the box by themselves
// run: the two with 10,000 tasks under -race (TestDashboardWith10kTasks,
// TestTaskPagesWalkEveryTaskOnceWhileCreating) and the one that fills etcd
// to its quota (TestNoSpaceShownAndRecovered). Run together they starved
// their etcds into request timeouts on the 2-core box; run alone, before
// the parallel tests (as they were), they left the second core idle for
// most of their minute or more each, since each mostly waits on its own
// etcd. With the turn, each runs beside the light parallel tests.
var heavy = make(chan struct{}, 1)

// heavyTurn makes t parallel and waits for the heavy turn, held until t
// ends.
func heavyTurn(t *testing.T) {
	t.Helper()
	t.Parallel()
	heavy <- struct{}{}
	t.Cleanup(func() { <-heavy })
}
