package e2e

import (
	"fmt"
	"testing"
	"time"

	"ringman/test/cluster"
)

// An instance with a stable id, killed with -9 and started again by
// another process at a new address, keeps every key it had on every node:
// the keys that were at the old address are at the new one, and no other
// key moved.
func TestIDKeepsKeysAcrossARestartAtANewAddress(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 90*time.Second)
	c := newCluster(t)
	ports := make([]int, 4)
	for i := range ports {
		p, err := cluster.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	var nodes []*cluster.Node
	for i := range 3 {
		cfg := cluster.NodeConfig{
			Name:     fmt.Sprintf("id%d", i+1),
			Services: []string{fmt.Sprintf("web=127.0.0.1:%d,id=web-%d", ports[i], i+1)},
		}
		if i > 0 {
			cfg.Join = []string{nodes[0].GossipAddr}
		}
		n, err := c.Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	all := instancesOf(nodes)
	keys := testKeys()
	before := agree(t, ctx, nodes, keys, all)

	victim := nodes[2]
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	moved := fmt.Sprintf("127.0.0.2:%d", ports[3])
	successor, err := c.Start(ctx, cluster.NodeConfig{
		Name:     "id3-new",
		Services: []string{moved + ",id=web-3"},
		Join:     []string{nodes[0].GossipAddr},
	})
	if err != nil {
		t.Fatal(err)
	}
	nodes = []*cluster.Node{nodes[0], nodes[1], successor}
	live := instancesOf(nodes)
	after := agree(t, ctx, nodes, keys, live)
	for i := range keys {
		want := before[i]
		if want == victim.Instance() {
			want = moved
		}
		if after[i] != want {
			t.Fatalf("GET %q = %q after web-3 moved to %s, want %q (it was %q)", keys[i], after[i], moved, want, before[i])
		}
	}
}
