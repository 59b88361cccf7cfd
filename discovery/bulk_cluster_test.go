package discovery

import (
	"fmt"
	"testing"
	"time"

	"ringman/hostmap"
)

// A bulk import (16,500 entries, far over the 256 that are gossiped entry
// by entry) reaches every node by broadcast alone: push/pull runs once an
// hour here, so only the join's exchanges, done before the import, could
// carry state.
func TestOverridesClusterBulkImportIsBroadcast(t *testing.T) {
	t.Parallel()
	tun := testTunables()
	tun.pushPullInterval = time.Hour
	all := startThreeOverrides(t, tun)
	a := all[0]

	const n = 16500
	pairs := make([]hostmap.Pair, n)
	for i := range pairs {
		pairs[i] = hostmap.Pair{
			Host:    fmt.Sprintf("bulk-%05d.example.com", i),
			Backend: fmt.Sprintf("10.4.%d.%d:80", i/256, i%256),
		}
	}
	waitFor(t, convergeWithin, queuesEmpty(all))
	start := time.Now()
	if _, err := a.table.SetMany(pairs); err != nil {
		t.Fatal(err)
	}
	committed := time.Since(start)
	waitFor(t, 30*time.Second, func() (bool, string) {
		for _, node := range all {
			if got := node.table.Len(); got != n {
				return false, fmt.Sprintf("%s has %d of the %d imported entries", node.Name(), got, n)
			}
		}
		return true, ""
	})
	t.Logf("%d entries on all 3 nodes %v after the import began (its commit on a took %v)",
		n, time.Since(start).Round(time.Millisecond), committed.Round(time.Millisecond))
	// The receivers do not relay what a sent to every member.
	waitFor(t, convergeWithin, queuesEmpty(all))
	for _, node := range all[1:] {
		if sent := node.gossip.sent.Load(); sent != 0 {
			t.Errorf("%s relayed the bulk import: it sent %d large broadcasts", node.Name(), sent)
		}
	}
}
