package discovery

// Cluster tests of the host overrides: real hostmap.Tables, each
// on its own bbolt file, replicated by real nodes, wired as
// cmd/ringman/serve.go wires them (Config.SharedState = table, Peers = the
// store, then table.SetBroadcast(node.Broadcast) once the node runs).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ringman/hostmap"
	"ringman/store"
)

// overrideNode is a node with its override table and data file.
type overrideNode struct {
	*testNode
	table *hostmap.Table
	st    *store.Store
	dir   string

	stopOnce sync.Once
}

// startOverrideNode opens dir's data file and override table and starts a
// node that replicates the table, as serve does.
func startOverrideNode(t *testing.T, name, dir string, tun tunables, edit func(*Config)) *overrideNode {
	t.Helper()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() { _ = st.Close() }) // runs after the node's Shutdown
	n := &overrideNode{st: st, dir: dir}
	tn := startNodeTun(t, name, tun, func(c *Config) {
		// The node's test logger, so that the table's lines are in the
		// logs printed when the test fails.
		table, err := hostmap.Open(st.DB(), hostmap.Options{Node: name, Logger: c.Logger})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(func() { _ = table.Close() })
		n.table = table
		c.SharedState = table
		c.Peers = st
		if edit != nil {
			edit(c)
		}
	})
	n.table.SetBroadcast(tn.Broadcast)
	n.testNode = tn
	return n
}

// stop stops the node as serve does when it exits: gossip, then the table,
// then the data file.
func (n *overrideNode) stop(t *testing.T) {
	t.Helper()
	n.stopOnce.Do(func() {
		if err := n.Shutdown(); err != nil {
			t.Errorf("%s: shutdown: %v", n.Name(), err)
		}
		if err := n.table.Close(); err != nil {
			t.Errorf("%s: close table: %v", n.Name(), err)
		}
		if err := n.st.Close(); err != nil {
			t.Errorf("%s: close store: %v", n.Name(), err)
		}
	})
}

// startThreeOverrides starts a, then b and c with a as their seed, and waits
// until all three see all three.
func startThreeOverrides(t *testing.T, tun tunables) []*overrideNode {
	t.Helper()
	a := startOverrideNode(t, "a", t.TempDir(), tun, nil)
	b := startOverrideNode(t, "b", t.TempDir(), tun, seeds(a.testNode))
	c := startOverrideNode(t, "c", t.TempDir(), tun, seeds(a.testNode))
	all := []*overrideNode{a, b, c}
	waitFor(t, convergeWithin, webIs(overrideTestNodes(all), "a", "b", "c"))
	return all
}

func overrideTestNodes(nodes []*overrideNode) []*testNode {
	out := make([]*testNode, len(nodes))
	for i, n := range nodes {
		out[i] = n.testNode
	}
	return out
}

// storedOverrides reads every entry of db's overrides bucket, tombstones
// included. It decodes the value format of hostmap/codec.go (encodeValue:
// uvarint clock, uvarint-prefixed node, then the backend, "" for a
// tombstone): the public API hides tombstones, and this is also what
// survives a restart.
func storedOverrides(db *bolt.DB) (map[string]hostmap.Entry, error) {
	out := map[string]hostmap.Entry{}
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("overrides"))
		if b == nil {
			return errors.New("no overrides bucket")
		}
		return b.ForEach(func(k, v []byte) error {
			clock, n := binary.Uvarint(v)
			if n <= 0 {
				return fmt.Errorf("%s: bad clock", k)
			}
			v = v[n:]
			l, n := binary.Uvarint(v)
			if n <= 0 || uint64(len(v)-n) < l {
				return fmt.Errorf("%s: bad node", k)
			}
			v = v[n:]
			out[string(k)] = hostmap.Entry{
				Host:    string(k),
				Backend: string(v[l:]),
				Version: hostmap.Version{Clock: clock, Node: string(v[:l])},
			}
			return nil
		})
	})
	return out, err
}

// lwwWins is hostmap's rule, restated: the greater clock, then the greater
// node name, then the greater backend.
func lwwWins(a, b hostmap.Entry) bool {
	if a.Version.Clock != b.Version.Clock {
		return a.Version.Clock > b.Version.Clock
	}
	if a.Version.Node != b.Version.Node {
		return a.Version.Node > b.Version.Node
	}
	return a.Backend > b.Backend
}

// applyLWW returns want with each of entries merged in by lwwWins.
func applyLWW(want map[string]hostmap.Entry, entries ...hostmap.Entry) map[string]hostmap.Entry {
	out := maps.Clone(want)
	if out == nil {
		out = map[string]hostmap.Entry{}
	}
	for _, e := range entries {
		if cur, ok := out[e.Host]; !ok || lwwWins(e, cur) {
			out[e.Host] = e
		}
	}
	return out
}

// liveOf returns the live entries of a full table, sorted by host, as
// Table.List does.
func liveOf(all map[string]hostmap.Entry) []hostmap.Entry {
	var out []hostmap.Entry
	for _, h := range slices.Sorted(maps.Keys(all)) {
		if all[h].Backend != "" {
			out = append(out, all[h])
		}
	}
	return out
}

// diffEntries describes the first difference between two full tables.
func diffEntries(got, want map[string]hostmap.Entry) string {
	for _, h := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[h]; !ok {
			return fmt.Sprintf("%s missing (want %+v)", h, want[h])
		} else if g != want[h] {
			return fmt.Sprintf("%s = %+v, want %+v", h, g, want[h])
		}
	}
	for _, h := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[h]; !ok {
			return fmt.Sprintf("%s = %+v, not expected", h, got[h])
		}
	}
	return ""
}

// checkTable reports how table and its data file differ from want, the
// full table (tombstones included), or "".
func checkTable(table *hostmap.Table, db *bolt.DB, want map[string]hostmap.Entry) string {
	stored, err := storedOverrides(db)
	if err != nil {
		return "read data file: " + err.Error()
	}
	if d := diffEntries(stored, want); d != "" {
		return fmt.Sprintf("data file (%d entries, want %d): %s", len(stored), len(want), d)
	}
	live := liveOf(want)
	if got := table.List(); !slices.Equal(got, live) {
		return fmt.Sprintf("List() has %d entries, want %d, or they differ", len(got), len(live))
	}
	if got := table.Len(); got != len(live) {
		return fmt.Sprintf("Len() = %d, want %d", got, len(live))
	}
	return ""
}

// convergeWithin bounds every wait for the cluster to agree. Runs take
// well under a second per wait; the margin is for loaded machines, where
// the fast profile flaps members and lost gossip waits for push/pull.
const convergeWithin = 15 * time.Second

// tablesAre reports whether every node's table, in memory and in its data
// file, is exactly want (versions and tombstones included).
func tablesAre(nodes []*overrideNode, want map[string]hostmap.Entry) func() (bool, string) {
	return func() (bool, string) {
		for _, n := range nodes {
			if d := checkTable(n.table, n.st.DB(), want); d != "" {
				return false, n.Name() + ": " + d
			}
		}
		return true, ""
	}
}

// matchesAre reports whether every node's Match gives want[key] for each
// key (nil: no override).
func matchesAre(nodes []*overrideNode, want map[string]string) func() (bool, string) {
	return func() (bool, string) {
		for _, n := range nodes {
			for _, key := range slices.Sorted(maps.Keys(want)) {
				got := n.table.Match([]byte(key))
				var w []string
				if want[key] != "" {
					w = []string{want[key]}
				}
				if !slices.Equal(got, w) {
					return false, fmt.Sprintf("%s: Match(%q) = %q, want %q", n.Name(), key, got, w)
				}
			}
		}
		return true, ""
	}
}

// queuesEmpty reports whether no node has a broadcast waiting.
func queuesEmpty(nodes []*overrideNode) func() (bool, string) {
	return func() (bool, string) {
		for _, n := range nodes {
			n.gossip.big.mu.Lock()
			big := len(n.gossip.big.pending)
			n.gossip.big.mu.Unlock()
			if q := n.gossip.queue.NumQueued(); q > 0 || big > 0 {
				return false, fmt.Sprintf("%s still has %d broadcasts and %d large ones queued", n.Name(), q, big)
			}
		}
		return true, ""
	}
}

func mustSet(t *testing.T, n *overrideNode, host, backend string) hostmap.Entry {
	t.Helper()
	e, err := n.table.Set(host, backend)
	if err != nil {
		t.Fatalf("%s: set %s: %v", n.Name(), host, err)
	}
	return e
}

func mustDelete(t *testing.T, n *overrideNode, host string) hostmap.Entry {
	t.Helper()
	e, err := n.table.Delete(host)
	if err != nil {
		t.Fatalf("%s: delete %s: %v", n.Name(), host, err)
	}
	return e
}

// A set, a replacement from another node, a wildcard and a delete, each
// made on one node, reach every node's table and data file. Broadcasts carry
// them (tens of milliseconds, logged); the fast profile's push/pull (5 s)
// repairs gossip lost on a loaded machine, which is why this test does not
// turn push/pull off to prove the broadcast path (TestOverridesClusterBurst
// does, to show a bug).
func TestOverridesClusterSetDelete(t *testing.T) {
	t.Parallel()
	all := startThreeOverrides(t, testTunables())
	a, b, c := all[0], all[1], all[2]
	const beta = "beta.example.com"

	start := time.Now()
	want := applyLWW(nil, mustSet(t, a, "Beta.Example.COM", "10.0.0.9:3000"))
	waitFor(t, convergeWithin, tablesAre(all, want))
	waitFor(t, 5*time.Second, matchesAre(all, map[string]string{
		"beta.example.com":            "10.0.0.9:3000",
		"BETA.example.com:8080/x?y=1": "10.0.0.9:3000",
		"gamma.example.com":           "",
	}))
	t.Logf("set visible everywhere in %v", time.Since(start).Round(time.Millisecond))

	// b has seen a's set: its replacement is newer.
	want = applyLWW(want, mustSet(t, b, beta, "10.0.0.10:3000"))
	want = applyLWW(want, mustSet(t, c, "*.example.org", "wild.internal:8080"))
	if want[beta].Version.Node != "b" {
		t.Fatalf("b's replacement is not the newest version: %+v", want[beta])
	}
	waitFor(t, convergeWithin, tablesAre(all, want))
	waitFor(t, 5*time.Second, matchesAre(all, map[string]string{
		beta:                     "10.0.0.10:3000",
		"shop.eu.example.org/ok": "wild.internal:8080",
		"example.org":            "",
	}))

	// A delete on the third node: a tombstone, the same on every node.
	start = time.Now()
	want = applyLWW(want, mustDelete(t, c, beta))
	waitFor(t, convergeWithin, tablesAre(all, want))
	waitFor(t, 5*time.Second, matchesAre(all, map[string]string{beta: "", "x.example.org": "wild.internal:8080"}))
	for _, n := range all {
		if _, ok := n.table.Get(beta); ok {
			t.Errorf("%s: Get(%s) still finds the deleted override", n.Name(), beta)
		}
		if _, err := n.table.Delete(beta); !errors.Is(err, hostmap.ErrNotFound) {
			t.Errorf("%s: deleting %s again: %v, want ErrNotFound", n.Name(), beta, err)
		}
	}
	t.Logf("delete visible everywhere in %v", time.Since(start).Round(time.Millisecond))
}

// A bulk import of 1,000 entries (over hostmap's 256-entry limit for
// gossip entry by entry) reaches every node (sent to each over TCP; see
// bulk_cluster_test.go for the import that only broadcasts can deliver).
// Push/pull every 200 ms instead of the fast profile's 5 s.
func TestOverridesClusterBulkImport(t *testing.T) {
	t.Parallel()
	tun := testTunables()
	tun.pushPullInterval = 200 * time.Millisecond
	all := startThreeOverrides(t, tun)
	a := all[0]

	pairs := make([]hostmap.Pair, 1000)
	for i := range pairs {
		pairs[i] = hostmap.Pair{
			Host:    fmt.Sprintf("bulk-%04d.example.com", i),
			Backend: fmt.Sprintf("10.1.%d.%d:80", i/256, i%256),
		}
	}
	waitFor(t, convergeWithin, queuesEmpty(all))
	start := time.Now()
	entries, err := a.table.SetMany(pairs)
	if err != nil {
		t.Fatal(err)
	}
	want := applyLWW(nil, entries...)
	waitFor(t, convergeWithin, tablesAre(all, want))
	t.Logf("1,000 entries on every node %v after the import", time.Since(start).Round(time.Millisecond))
	waitFor(t, 5*time.Second, matchesAre(all, map[string]string{
		"bulk-0000.example.com":       "10.1.0.0:80",
		"bulk-0999.example.com/p":     "10.1.3.231:80",
		"BULK-0500.EXAMPLE.COM:443/x": "10.1.1.244:80",
		"bulk-1000.example.com":       "",
	}))
}

// A node stopped (gossip shut down, data file closed) while the others made
// 100 changes (new hosts, replacements, deletes of hosts it holds) converges
// once it restarts on the same data dir and rejoins through the peers saved
// in it; every data file then holds the same table, checked by reopening it.
// Push/pull runs every second (fast profile: 5 s): gossip is best effort,
// and hostmap drops messages when its merge queue is full, so on a loaded
// machine a few of the 100 changes between a and b may need it.
func TestOverridesClusterRestart(t *testing.T) {
	t.Parallel()
	tun := testTunables()
	tun.pushPullInterval = time.Second
	all := startThreeOverrides(t, tun)
	a, b, c := all[0], all[1], all[2]

	var want map[string]hostmap.Entry
	for i := range 20 {
		want = applyLWW(want, mustSet(t, a, fmt.Sprintf("old-%d.example.com", i), "10.2.0.1:80"))
	}
	waitFor(t, convergeWithin, tablesAre(all, want))
	// c restarts without seeds: it needs the peers it saved.
	waitFor(t, convergeWithin, func() (bool, string) {
		saved, err := c.st.LoadPeers()
		if err != nil {
			return false, err.Error()
		}
		return slices.Contains(saved, a.Addr()) && slices.Contains(saved, b.Addr()),
			fmt.Sprintf("c saved peers %v, want %s and %s", saved, a.Addr(), b.Addr())
	})
	before := maps.Clone(want)

	addr, dir := c.Addr(), c.dir
	c.stop(t)
	// 100 changes; each host is written by one node only, so the last
	// write of each wins whatever the timing.
	for i := range 10 {
		want = applyLWW(want, mustSet(t, a, fmt.Sprintf("old-%d.example.com", i), "10.2.0.2:80"))
	}
	for i := 10; i < 20; i++ {
		want = applyLWW(want, mustDelete(t, b, fmt.Sprintf("old-%d.example.com", i)))
	}
	for i := range 80 {
		writer := []*overrideNode{a, b}[i%2]
		want = applyLWW(want, mustSet(t, writer, fmt.Sprintf("new-%d.example.com", i), fmt.Sprintf("10.3.0.%d:80", i)))
	}
	if got := len(liveOf(want)); got != 90 {
		t.Fatalf("model: %d live entries after the changes, want 90", got)
	}
	waitFor(t, convergeWithin, tablesAre([]*overrideNode{a, b}, want))
	waitFor(t, convergeWithin, statusIs([]*testNode{a.testNode, b.testNode}, "c", StatusFailed))
	if n := len(a.logs.lines("override merge queue full")) + len(b.logs.lines("override merge queue full")); n > 0 {
		t.Logf("%d override messages were dropped by a full merge queue (push/pull repaired them)", n)
	}

	// c's data file holds what it had when it stopped.
	{
		st, err := store.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		stored, err := storedOverrides(st.DB())
		_ = st.Close()
		if err != nil {
			t.Fatal(err)
		}
		if d := diffEntries(stored, before); d != "" {
			t.Fatalf("stopped c's data file: %s", d)
		}
	}

	start := time.Now()
	c2 := startOverrideNode(t, "c", dir, tun, func(cfg *Config) { cfg.BindAddr = addr })
	all = []*overrideNode{a, b, c2}
	waitFor(t, convergeWithin, func() (bool, string) { return c2.Joined(), "restarted c has not joined" })
	waitFor(t, convergeWithin, tablesAre(all, want))
	t.Logf("restarted node converged %v after starting", time.Since(start).Round(time.Millisecond))
	waitFor(t, convergeWithin, webIs(overrideTestNodes(all), "a", "b", "c"))
	waitFor(t, 5*time.Second, matchesAre(all, map[string]string{
		"old-0.example.com":  "10.2.0.2:80",
		"old-15.example.com": "",
		"new-79.example.com": "10.3.0.79:80",
	}))

	// Every data file, reopened, holds the converged table.
	for _, n := range all {
		n.stop(t)
		st, err := store.Open(n.dir)
		if err != nil {
			t.Fatalf("%s: reopen: %v", n.Name(), err)
		}
		table, err := hostmap.Open(st.DB(), hostmap.Options{Node: n.Name()})
		if err != nil {
			_ = st.Close()
			t.Fatalf("%s: reopen table: %v", n.Name(), err)
		}
		d := checkTable(table, st.DB(), want)
		_ = table.Close()
		_ = st.Close()
		if d != "" {
			t.Errorf("%s reopened: %s", n.Name(), d)
		}
	}
}

// A 2|1 partition with conflicting writes on both sides (the same hosts set
// to different backends; deletes on one side, sets on the other) converges
// after the heal to the same table on every node, tombstones included: the
// last writer wins, whichever side it was on.
func TestOverridesClusterPartition(t *testing.T) {
	t.Parallel()
	cut := newNetCut()
	tun := cut.tunables()
	a := startOverrideNode(t, "a", t.TempDir(), tun, nil)
	b := startOverrideNode(t, "b", t.TempDir(), tun, seeds(a.testNode))
	c := startOverrideNode(t, "c", t.TempDir(), tun, seeds(a.testNode))
	all := []*overrideNode{a, b, c}
	waitFor(t, convergeWithin, webIs(overrideTestNodes(all), "a", "b", "c"))

	host := func(s string) string { return s + ".example.com" }
	var base map[string]hostmap.Entry
	for _, h := range []string{"x", "y", "z", "v", "gone"} {
		base = applyLWW(base, mustSet(t, a, host(h), "10.9.0.1:80"))
	}
	waitFor(t, convergeWithin, tablesAre(all, base))

	left, right := []*overrideNode{a, b}, []*overrideNode{c}
	start := time.Now()
	cut.split(overrideTestNodes(left), overrideTestNodes(right))
	waitFor(t, convergeWithin, statusIs(overrideTestNodes(left), "c", StatusFailed))
	waitFor(t, convergeWithin, statusIs(overrideTestNodes(right), "a", StatusFailed))
	waitFor(t, convergeWithin, statusIs(overrideTestNodes(right), "b", StatusFailed))
	t.Logf("partition seen by both sides in %v", time.Since(start).Round(time.Millisecond))

	// Round 1, then round 2 once the wall clock has passed every round-1
	// version: a round-2 write is then newer than any round-1 write, on
	// either side (the HLC is wall-clock milliseconds plus a counter).
	const L, R = "10.9.1.1:80", "10.9.2.2:80" // left's and right's backends
	var lw, rw []hostmap.Entry
	lw = append(lw,
		mustSet(t, a, host("x"), L),
		mustDelete(t, b, host("y")),
		mustDelete(t, a, host("gone")),
		mustSet(t, a, host("only-left"), L))
	rw = append(rw,
		mustSet(t, c, host("z"), R),
		mustSet(t, c, host("v"), R),
		mustSet(t, c, "*.only-right.example.com", R))
	var last int64 // the latest round-1 version's millisecond
	for _, e := range slices.Concat(lw, rw) {
		last = max(last, e.Version.Time().UnixMilli())
	}
	waitFor(t, 5*time.Second, func() (bool, string) {
		return time.Now().UnixMilli() > last, "the wall clock has not passed the round-1 versions"
	})
	rw = append(rw,
		mustSet(t, c, host("x"), R),    // set later on the right: right wins
		mustSet(t, c, host("y"), R),    // set after the left's delete: the set wins
		mustDelete(t, c, host("gone"))) // both deleted it: the later tombstone
	lw = append(lw,
		mustSet(t, b, host("z"), L), // set later on the left: left wins
		mustDelete(t, b, host("v"))) // delete after the right's set: the delete wins

	wantLeft := applyLWW(base, lw...)
	wantRight := applyLWW(base, rw...)
	want := applyLWW(wantLeft, rw...)
	for h, backend := range map[string]string{
		"x": R, "y": R, "z": L, "v": "", "gone": "", "only-left": L,
	} {
		if got := want[host(h)].Backend; got != backend {
			t.Fatalf("test setup: %s would end as %q, want %q: %+v", host(h), got, backend, want[host(h)])
		}
	}
	if want[host("gone")].Version.Node != "c" {
		t.Fatalf("test setup: c's tombstone of %s is not the newer one: %+v", host("gone"), want[host("gone")])
	}

	// Each side agrees within itself, and nothing crossed the cut.
	waitFor(t, convergeWithin, tablesAre(left, wantLeft))
	waitFor(t, convergeWithin, tablesAre(right, wantRight))
	// Until their retransmits run out, queued broadcasts would cross the
	// healed cut by themselves: let them, so that the state exchanges of
	// the rejoin do the work.
	waitFor(t, convergeWithin, queuesEmpty(all))

	start = time.Now()
	cut.heal()
	waitFor(t, convergeWithin, tablesAre(all, want))
	t.Logf("converged %v after the heal", time.Since(start).Round(time.Millisecond))
	waitFor(t, 5*time.Second, matchesAre(all, map[string]string{
		host("x"):                          R,
		host("y") + ":8443/path":           R,
		host("z"):                          L,
		host("v"):                          "",
		host("gone"):                       "",
		host("only-left"):                  L,
		"api.only-right.example.com/v1":    R,
		strings.ToUpper(host("only-left")): L,
		"only-right.example.com":           "",
		"unrelated.example.net":            "",
	}))
	waitFor(t, convergeWithin, webIs(overrideTestNodes(all), "a", "b", "c"))
}

// BUG (hostmap), skipped unless DISCOVERY_REPRO_BURST=1: a change of up to
// 256 entries (hostmap's broadcastMax) is broadcast entry by entry, but each
// receiving table queues at most 64 messages (Table.incoming) and merges
// them one bbolt commit (fsync) at a time, so a burst of 256 loses about
// half its messages on each receiver ("override merge queue full"; measured:
// 100-130 of 256 on b and on c). Relays between the receivers recover most,
// not all: the rest arrive only with the next push/pull, 5 s (fast), 15 s
// (lan) or 30 s (wan) later, more in a large cluster. Push/pull is off here,
// so they never arrive.
func TestOverridesClusterBurst(t *testing.T) {
	t.Parallel()
	// Broadcasts ride UDP gossip and may be lost under load; push/pull
	// repairs that, here every second. What must hold: the receivers'
	// merge queues never overflow (they once held 64 messages and dropped
	// the rest of a 256-entry burst), and everything arrives.
	tun := testTunables()
	tun.pushPullInterval = time.Second
	all := startThreeOverrides(t, tun)
	pairs := make([]hostmap.Pair, 256)
	for i := range pairs {
		pairs[i] = hostmap.Pair{Host: fmt.Sprintf("burst-%03d.example.com", i), Backend: "10.4.0.1:80"}
	}
	entries, err := all[0].table.SetMany(pairs)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, tablesAre(all, applyLWW(nil, entries...)))
	for _, n := range all[1:] {
		if dropped := len(n.logs.lines("override merge queue full")); dropped > 0 {
			t.Errorf("%s dropped %d messages from a full merge queue", n.Name(), dropped)
		}
	}
}
