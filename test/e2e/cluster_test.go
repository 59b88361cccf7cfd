package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ringman/test/cluster"
)

const keyCount = 10_000

// testKeys are keys as nginx sends them: bare URIs, host+URI, and hosts with
// ports and mixed case.
func testKeys() []string {
	keys := make([]string, 0, keyCount)
	for i := range keyCount {
		switch i % 3 {
		case 0:
			keys = append(keys, fmt.Sprintf("/img/%d.jpg", i))
		case 1:
			keys = append(keys, fmt.Sprintf("shop%d.example.com/cart?id=%d", i%97, i))
		default:
			keys = append(keys, fmt.Sprintf("Site%d.Example.COM:8080/p/%d", i%13, i))
		}
	}
	return keys
}

func instancesOf(nodes []*cluster.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Instances()...)
	}
	return out
}

// agree asks every node for the owner of every key (pipelined GETs) and
// fails unless all answer alike, each answer is one of live, and every live
// instance owns a fair share. It returns the answers. The lookups are only
// compared when every node's ring was live before and after them; a gossip
// flap in between (a busy CI machine can miss the fast profile's 100 ms
// probe timeout) is logged and the round retried.
func agree(t *testing.T, ctx context.Context, nodes []*cluster.Node, keys, live []string) []string {
	t.Helper()
	const attempts = 5
	for attempt := 1; ; attempt++ {
		if err := cluster.WaitInstances(ctx, nodes, live); err != nil {
			t.Fatal(err)
		}
		answers := make([][]string, len(nodes))
		for i, n := range nodes {
			got, err := n.Lookups(ctx, keys)
			if err != nil {
				t.Fatal(err)
			}
			answers[i] = got
		}
		if changed := ringsChanged(ctx, nodes, live); changed != "" {
			if attempt == attempts {
				t.Fatalf("membership kept changing during %d rounds of lookups: %s", attempts, changed)
			}
			t.Logf("membership changed during the lookups (%s); again", changed)
			continue
		}
		return compareAnswers(t, nodes, keys, live, answers)
	}
}

// ringsChanged says which node's RING.MEMBERS is not live, or "".
func ringsChanged(ctx context.Context, nodes []*cluster.Node, live []string) string {
	want := slices.Sorted(slices.Values(live))
	for _, n := range nodes {
		got, err := n.RingMembers(ctx)
		if err != nil {
			return fmt.Sprintf("%s: RING.MEMBERS: %v", n.Name, err)
		}
		if !slices.Equal(got, want) {
			return fmt.Sprintf("%s has %v", n.Name, got)
		}
	}
	return ""
}

func compareAnswers(t *testing.T, nodes []*cluster.Node, keys, live []string, answers [][]string) []string {
	t.Helper()
	first := answers[0]
	for i, got := range answers[1:] {
		n := nodes[i+1]
		diff := 0
		for k := range got {
			if got[k] != first[k] {
				if diff < 5 {
					t.Errorf("GET %q: %s says %q, %s says %q", keys[k], nodes[0].Name, first[k], n.Name, got[k])
				}
				diff++
			}
		}
		if diff > 0 {
			t.Fatalf("%s and %s disagree on %d of %d keys with the same live instances %v", nodes[0].Name, n.Name, diff, len(keys), live)
		}
	}
	owned := map[string]int{}
	for i, a := range first {
		if !slices.Contains(live, a) {
			t.Fatalf("GET %q = %q, not a live instance %v", keys[i], a, live)
		}
		owned[a]++
	}
	// The load bound caps the busiest instance; this only catches an
	// instance that is in the ring but owns next to nothing.
	for _, inst := range live {
		if share := float64(owned[inst]) / float64(len(keys)); share < 0.5/float64(len(live)) {
			t.Errorf("%s owns %.1f%% of %d keys; want at least half a fair share (%.1f%%)", inst, 100*share, len(keys), 50/float64(len(live)))
		}
	}
	t.Logf("%d nodes agree on %d keys; keys per instance: %v", len(nodes), len(keys), owned)
	return first
}

// waitPeersPersisted polls until victim's data file holds the gossip
// addresses of peers. A node saves its known peers as soon as it learns them
// (a few milliseconds after the join) and no API shows them, so without this
// wait a kill could in principle land first. The bbolt file stores the list
// as plain JSON, so reading it (without the lock, read-only) shows the save.
func waitPeersPersisted(ctx context.Context, victim *cluster.Node, peers []*cluster.Node) error {
	return cluster.Poll(ctx, 50*time.Millisecond, fmt.Sprintf("%s's known peers saved in its data dir", victim.Name), func() (bool, string) {
		files, _ := filepath.Glob(filepath.Join(victim.DataDir, "*.db"))
		if len(files) != 1 {
			return false, fmt.Sprintf("want one *.db file in %s, found %v", victim.DataDir, files)
		}
		raw, err := os.ReadFile(files[0])
		if err != nil {
			return false, err.Error()
		}
		for _, p := range peers {
			if !bytes.Contains(raw, []byte(strconv.Quote(p.GossipAddr))) {
				return false, fmt.Sprintf("%s does not contain %q", files[0], p.GossipAddr)
			}
		}
		return true, ""
	})
}

func without(list []string, drop ...string) []string {
	return slices.DeleteFunc(slices.Clone(list), func(s string) bool { return slices.Contains(drop, s) })
}

// Three processes agree on every key; a kill -9 takes the victim's instance
// out of the survivors' rings; restarted with the same name and data dir and
// no --join, it finds the cluster again from the peers it remembered, and
// every key goes back to the owner it had.
func TestThreeNodesAgreeSurviveCrashAndRejoin(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 90*time.Second)
	c := newCluster(t)
	start := time.Now()
	nodes, err := c.StartRing(ctx, "node", "web", 3)
	if err != nil {
		t.Fatal(err)
	}
	all := instancesOf(nodes)
	if err := cluster.WaitInstances(ctx, nodes, all); err != nil {
		t.Fatal(err)
	}
	t.Logf("3 nodes started and converged in %v", time.Since(start).Round(time.Millisecond))

	keys := testKeys()
	before := agree(t, ctx, nodes, keys, all)

	victim, survivors := nodes[2], nodes[:2]
	if err := waitPeersPersisted(ctx, victim, survivors); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitInstances(ctx, survivors, without(all, victim.Instance())); err != nil {
		t.Fatalf("after kill -9 of %s: %v", victim.Name, err)
	}
	t.Logf("kill -9 %s: both survivors dropped %s after %v", victim.Name, victim.Instance(), time.Since(killed).Round(time.Millisecond))

	after := agree(t, ctx, survivors, keys, without(all, victim.Instance()))
	moved, orphaned := 0, 0
	for i := range keys {
		switch {
		case before[i] == victim.Instance():
			orphaned++
		case after[i] != before[i]:
			moved++
		}
	}
	t.Logf("keys that moved although their owner survived: %d of %d (%.2f%%)", moved, keyCount-orphaned, 100*float64(moved)/float64(keyCount-orphaned))

	// Each survivor logs the failure once, and the ring change it caused:
	// the instance removed and the share of keys that moved.
	for _, n := range survivors {
		err := cluster.Poll(ctx, 20*time.Millisecond, n.Name+" logs the failure and the ring change", func() (bool, string) {
			log := n.Log()
			failed := strings.Count(log, `msg="node failed" node=`+victim.Name+" ")
			ring := regexp.MustCompile(`msg="ring changed" service=web added=\[\] removed=\[` + regexp.QuoteMeta(victim.Instance()) +
				`\] keys_moved=[0-9.]+%`).FindString(log)
			return failed == 1 && ring != "", fmt.Sprintf("%d 'node failed' lines for %s, ring change line %q", failed, victim.Name, ring)
		})
		if err != nil {
			t.Error(err)
		}
	}

	victim.Join = nil // rejoin from the peers remembered in the data dir
	restarted := time.Now()
	if err := victim.Start(ctx); err != nil {
		t.Fatalf("restart %s without --join: %v", victim.Name, err)
	}
	if err := cluster.WaitInstances(ctx, nodes, all); err != nil {
		t.Fatalf("after restarting %s without --join: %v", victim.Name, err)
	}
	t.Logf("%s restarted without --join; every ring has 3 instances after %v", victim.Name, time.Since(restarted).Round(time.Millisecond))

	again := agree(t, ctx, nodes, keys, all)
	for i := range keys {
		if again[i] != before[i] {
			t.Fatalf("GET %q = %q after the rejoin, %q before the crash: same live set, different answer", keys[i], again[i], before[i])
		}
	}
}

// SIGTERM: the node drains, leaves, and exits 0 within --leave-timeout
// (plus the second its HTTP server may take to close, and slack for a
// loaded machine: a node that ignored the timeout would wait for ever); the
// others list it as left and drop its instance.
func TestSIGTERMLeavesGracefully(t *testing.T) {
	t.Parallel()
	const leaveTimeout, slack = 3 * time.Second, 5 * time.Second
	ctx := testContext(t, 60*time.Second)
	c := newCluster(t)
	nodes, err := c.StartRing(ctx, "node", "web", 3, "--leave-timeout", leaveTimeout.String())
	if err != nil {
		t.Fatal(err)
	}
	all := instancesOf(nodes)
	if err := cluster.WaitInstances(ctx, nodes, all); err != nil {
		t.Fatal(err)
	}

	leaver := nodes[1]
	others := []*cluster.Node{nodes[0], nodes[2]}
	sent := time.Now()
	if err := leaver.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !leaver.Wait(leaveTimeout + slack) {
		t.Errorf("%s still runs %v after SIGTERM (--leave-timeout %v)", leaver.Name, leaveTimeout+slack, leaveTimeout)
		if _, err := leaver.Stop(cluster.StopTimeout); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(sent)
	if code := leaver.ExitCode(); code != 0 {
		t.Errorf("%s after SIGTERM: %s, want exit status 0", leaver.Name, leaver.ExitState())
	}
	t.Logf("%s exited (%s) %v after SIGTERM", leaver.Name, leaver.ExitState(), took.Round(time.Millisecond))

	err = cluster.Poll(ctx, 20*time.Millisecond, fmt.Sprintf("%s listed as left by the others", leaver.Name), func() (bool, string) {
		for _, n := range others {
			st, err := n.MemberStatus(ctx)
			if err != nil {
				return false, fmt.Sprintf("%s: /v1/members: %v", n.Name, err)
			}
			if st[leaver.Name] != "left" {
				return false, fmt.Sprintf("%s lists %s as %q (all: %v)", n.Name, leaver.Name, st[leaver.Name], st)
			}
		}
		return true, ""
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("both others list %s as left %v after SIGTERM", leaver.Name, time.Since(sent).Round(time.Millisecond))
	if err := cluster.WaitInstances(ctx, others, without(all, leaver.Instance())); err != nil {
		t.Fatal(err)
	}
	for _, n := range others {
		st, err := n.MemberStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range others {
			if st[o.Name] != "alive" {
				t.Errorf("%s lists %s as %q, want alive", n.Name, o.Name, st[o.Name])
			}
		}
	}
}
