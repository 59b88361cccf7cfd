package discovery

import (
	"fmt"
	"testing"
	"time"
)

// A node that crashes and restarts at once under the same name at a new
// address is taken back within a few seconds, by the members' reclaim
// loop: push/pull, the only other path, is set to a minute here.
func TestRestartAtNewAddressIsTakenBack(t *testing.T) {
	t.Parallel()
	tun := testTunables()
	tun.pushPullInterval = time.Minute
	tun.reconnectEvery = time.Minute
	a := startNodeTun(t, "a", tun, nil)
	b := startNodeTun(t, "b", tun, seeds(a))
	c := startNodeTun(t, "c", tun, seeds(a))
	all := []*testNode{a, b}
	waitFor(t, 10*time.Second, webIs([]*testNode{a, b, c}, "a", "b", "c"))
	old := c.Addr()

	if err := c.Shutdown(); err != nil { // no leave: a crash
		t.Fatal(err)
	}
	moved := startNodeTun(t, "c", tun, seeds(a)) // port 0: a new address
	if moved.Addr() == old {
		t.Fatalf("the restarted node got its old address %s again", old)
	}
	took := waitFor(t, 8*time.Second, func() (bool, string) {
		for _, n := range all {
			for _, m := range n.Members() {
				if m.Name == "c" && (m.Addr != moved.Addr() || m.Status != StatusAlive) {
					return false, fmt.Sprintf("%s lists c at %s as %s, want alive at %s", n.Name(), m.Addr, m.Status, moved.Addr())
				}
			}
		}
		return true, ""
	})
	waitFor(t, 5*time.Second, webIs(all, "a", "b", "c"))
	t.Logf("c moved %s -> %s: taken back %v after the restart (push/pull every %v)", old, moved.Addr(),
		took.Round(time.Millisecond), tun.pushPullInterval)
	if len(a.logs.lines("restarted at a new address")) == 0 {
		t.Errorf("a did not log the reclaim:\n%s", a.logs)
	}
}
