package discovery

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// leaveTimeout is long on purpose: a Leave that waits for nobody would take
// all of it, and return memberlist's timeout error.
const leaveTimeout = 30 * time.Second

// TestLeaveAloneReturnsAtOnce: a node with nobody to tell leaves without
// waiting and without a warning.
func TestLeaveAloneReturnsAtOnce(t *testing.T) {
	t.Parallel()
	a := startNode(t, "a", nil)
	start := time.Now()
	if err := a.Leave(leaveTimeout); err != nil {
		t.Fatalf("Leave(%v) of a node alone: %v", leaveTimeout, err)
	}
	took := time.Since(start)
	t.Logf("Leave of a 1-node cluster returned in %v", took.Round(time.Millisecond))
	if took > leaveTimeout/2 {
		t.Errorf("Leave of a node alone took %v", took)
	}
	if lines := a.logs.lines("level=WARN"); len(lines) > 0 {
		t.Errorf("warnings while leaving alone:\n%s", strings.Join(lines, "\n"))
	}
}

// TestLeaveLastOfCluster: after the others left, the last node has nobody
// to tell either.
func TestLeaveLastOfCluster(t *testing.T) {
	t.Parallel()
	a, b, c := startThree(t)
	for _, n := range []*testNode{c, b} {
		if err := n.Leave(leaveTimeout); err != nil {
			t.Fatalf("%s: leave: %v", n.Name(), err)
		}
		if err := n.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, statusIs([]*testNode{a}, "b", StatusLeft))
	start := time.Now()
	if err := a.Leave(leaveTimeout); err != nil {
		t.Fatalf("last node's Leave(%v): %v", leaveTimeout, err)
	}
	t.Logf("last node's Leave returned in %v", time.Since(start).Round(time.Millisecond))
	if lines := a.logs.lines("level=WARN"); len(lines) > 0 {
		t.Errorf("warnings while leaving last:\n%s", strings.Join(lines, "\n"))
	}
}

// TestLeaveWholeClusterTogether: three nodes stopped at the same moment do
// not each wait the whole timeout for the others, who are leaving too.
func TestLeaveWholeClusterTogether(t *testing.T) {
	t.Parallel()
	a, b, c := startThree(t)
	nodes := []*testNode{a, b, c}
	took := make([]time.Duration, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			start := time.Now()
			errs[i] = n.Leave(leaveTimeout)
			took[i] = time.Since(start)
			_ = n.Shutdown()
		})
	}
	wg.Wait()
	for i, n := range nodes {
		t.Logf("%s: Leave returned in %v", n.Name(), took[i].Round(time.Millisecond))
		if errs[i] != nil {
			t.Errorf("%s: Leave(%v): %v", n.Name(), leaveTimeout, errs[i])
		}
		if took[i] > leaveTimeout/2 {
			t.Errorf("%s: Leave took %v", n.Name(), took[i])
		}
	}
}
