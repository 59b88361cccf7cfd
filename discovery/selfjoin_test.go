package discovery

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

// TestJoinSelfIsNotAJoin: this node's own gossip address, however it is
// spelt, is refused with a warning and does not make the node joined.
func TestJoinSelfIsNotAJoin(t *testing.T) {
	t.Parallel()
	// A seed without a port means this node's own port.
	a := startNode(t, "a", func(c *Config) { c.Seeds = []string{"127.0.0.1"} })
	waitFor(t, 10*time.Second, func() (bool, string) {
		return len(a.logs.lines("level=WARN", "own gossip address", "127.0.0.1")) == 1,
			"a did not warn once that its seed is its own address"
	})
	if a.Joined() {
		t.Error("a joined itself: Joined() is true")
	}
	_, port, _ := net.SplitHostPort(a.Addr())
	for _, addr := range []string{a.Addr(), "127.0.0.1", "127.0.0.1:" + port, "a/127.0.0.1:" + port} {
		n, err := a.Join([]string{addr})
		if n != 0 || !errors.Is(err, ErrJoinSelf) {
			t.Errorf("Join(%q) = %d, %v; want 0, ErrJoinSelf", addr, n, err)
		}
	}
	// localhost may also resolve to ::1, which is not this node: whatever
	// answers there, this node is not it.
	if n, err := a.Join([]string{"localhost:" + port}); n != 0 {
		t.Errorf("Join(localhost:%s) = %d, %v; want 0", port, n, err)
	}
	if a.Joined() {
		t.Error("Join to itself made a joined")
	}
	if len(a.Members()) != 1 {
		t.Errorf("members: %v", a.Members())
	}

	// Another node on the same IP is not this one.
	b := startNode(t, "b", nil)
	n, err := a.Join([]string{"127.0.0.1", b.Addr()})
	if n != 1 || err != nil {
		t.Fatalf("Join(self, b) = %d, %v; want 1, nil", n, err)
	}
	if !a.Joined() {
		t.Error("a joined b but Joined() is false")
	}
	waitFor(t, 10*time.Second, webIs([]*testNode{a, b}, "a", "b"))
}

// TestSeedsOnlySelfJoinedByOthers: a node whose only seed is itself becomes
// joined when another node joins it.
func TestSeedsOnlySelfJoinedByOthers(t *testing.T) {
	t.Parallel()
	a := startNode(t, "a", func(c *Config) { c.Seeds = []string{"127.0.0.1"} })
	waitFor(t, 10*time.Second, func() (bool, string) {
		return len(a.logs.lines("own gossip address")) > 0, "no warning about the self seed"
	})
	if a.Joined() {
		t.Fatal("a joined itself")
	}
	b := startNode(t, "b", seeds(a))
	waitFor(t, 10*time.Second, func() (bool, string) {
		return a.Joined() && b.Joined(), fmt.Sprintf("joined: a %v, b %v", a.Joined(), b.Joined())
	})
}
