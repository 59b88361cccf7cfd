package discovery

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// memKeys is an in-memory KeyStore; fail makes SaveKeys fail, block makes
// it wait until unblocked.
type memKeys struct {
	mu    sync.Mutex
	keys  [][]byte
	saves int
	fail  error
	block chan struct{}
}

func (s *memKeys) SaveKeys(keys [][]byte) error {
	s.mu.Lock()
	block, fail := s.block, s.fail
	s.mu.Unlock()
	if block != nil {
		<-block
	}
	if fail != nil {
		return fail
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = slices.Clone(keys)
	s.saves++
	return nil
}

func (s *memKeys) get() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.keys)
}

// packetCounter counts the gossip packets each node receives (before
// decryption), so that a test can wait until gossip has flowed.
type packetCounter struct {
	mu sync.Mutex
	n  map[string]*atomic.Int64 // by the node's gossip address
}

func (c *packetCounter) tunables() tunables {
	tun := testTunables()
	tun.wrapTransport = func(self string, t memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		c.mu.Lock()
		if c.n == nil {
			c.n = make(map[string]*atomic.Int64)
		}
		count := &atomic.Int64{}
		c.n[self] = count
		c.mu.Unlock()
		ct := &countTransport{NodeAwareTransport: t, count: count,
			packets: make(chan *memberlist.Packet), stopping: make(chan struct{}), stopped: make(chan struct{})}
		go ct.relay()
		return ct
	}
	return tun
}

func (c *packetCounter) get(addr string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.n[addr]; n != nil {
		return n.Load()
	}
	return 0
}

// flowed waits until every node has received at least more packets than
// it had when flowed was called: gossip went on under the current keys.
func (c *packetCounter) flowed(t *testing.T, nodes []*testNode, more int64) {
	t.Helper()
	start := make(map[string]int64)
	for _, n := range nodes {
		start[n.Addr()] = c.get(n.Addr())
	}
	waitFor(t, 10*time.Second, func() (bool, string) {
		for _, n := range nodes {
			if got := c.get(n.Addr()) - start[n.Addr()]; got < more {
				return false, fmt.Sprintf("%s received %d gossip packets, want %d", n.Name(), got, more)
			}
		}
		return true, ""
	})
}

// countTransport relays packets like netCut's cutTransport, counting them.
type countTransport struct {
	memberlist.NodeAwareTransport
	count             *atomic.Int64
	packets           chan *memberlist.Packet
	stopping, stopped chan struct{}
	once, stopOnce    sync.Once
}

func (t *countTransport) relay() {
	in := t.NodeAwareTransport.PacketCh()
	for {
		select {
		case <-t.stopped:
			return
		case p := <-in:
			t.count.Add(1)
			select {
			case t.packets <- p:
			case <-t.stopping:
			}
		}
	}
}

func (t *countTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *countTransport) Shutdown() error {
	t.once.Do(func() { close(t.stopping) })
	err := t.NodeAwareTransport.Shutdown()
	t.stopOnce.Do(func() { close(t.stopped) })
	return err
}

// keysOK runs op from n and fails the test unless every node in want did
// it; it returns the result.
func keysOK(t *testing.T, n *testNode, op KeyOp, key []byte, want int) KeyResult {
	t.Helper()
	res, err := n.Keys(context.Background(), op, key)
	if err != nil {
		t.Fatalf("%s from %s: %v", op, n.Name(), err)
	}
	if len(res.Answers) != want || res.Answered() != want {
		t.Fatalf("%s from %s: %d of %d nodes answered, want %d of %d; failed: %+v",
			op, n.Name(), res.Answered(), len(res.Answers), want, want, res.Failed())
	}
	return res
}

// countsAre checks a result's per-key counts: want is key, installed,
// primary, ...
func countsAre(t *testing.T, step string, res KeyResult, want ...any) {
	t.Helper()
	var got []any
	for _, c := range res.Keys() {
		got = append(got, keyID(c.Key), c.Installed, c.Primary)
	}
	exp := slices.Clone(want)
	for i := 0; i < len(exp); i += 3 {
		exp[i] = keyID(exp[i].([]byte))
	}
	if fmt.Sprint(got) != fmt.Sprint(exp) {
		t.Errorf("%s: keys (id installed primary) = %v, want %v", step, got, exp)
	}
}

// TestKeyRotationWithoutDowntime rotates the key of a 4-node cluster in the
// three steps (install, use, remove), each started from a different node,
// while gossip and lookups go on: no node ever fails to decrypt a packet,
// is marked failed or leaves anyone's live set. Then a node that knows only
// the new key joins, and one that knows only the old key is refused.
func TestKeyRotationWithoutDowntime(t *testing.T) {
	t.Parallel()
	oldKey, newKey := newKey(t), newKey(t)
	profile, err := LookupProfile("lan")
	if err != nil {
		t.Fatal(err)
	}
	pc := &packetCounter{}
	stores := map[string]*memKeys{}
	var shrank atomic.Int32 // OnChange calls with fewer than all four instances, once formed
	var formed atomic.Bool
	start := func(name string, seed *testNode) *testNode {
		stores[name] = &memKeys{}
		return startNodeTun(t, name, pc.tunables(), func(c *Config) {
			// lan, not fast: the verdicts below are about the keys, and
			// fast's 100 ms probe timeout turns a busy machine's stalls
			// into suspicions that have nothing to do with them.
			c.Profile = profile.Name
			c.Keys = [][]byte{oldKey}
			c.KeyStore = stores[name]
			if seed != nil {
				c.Seeds = []string{seed.Addr()}
			}
			c.OnChange = func(live map[string][]string) {
				if formed.Load() && len(live["web"]) < 4 {
					shrank.Add(1)
				}
			}
		})
	}
	a := start("a", nil)
	b, c, d := start("b", a), start("c", a), start("d", a)
	all := []*testNode{a, b, c, d}
	waitFor(t, 10*time.Second, webIs(all, "a", "b", "c", "d"))
	formed.Store(true)

	// Lookups go on all the time: every node's live set must stay whole.
	// Their ticks also measure the longest time the process could not run
	// (stalled), for the verdicts below.
	var lookups, short, stalled atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			// The gap from the end of the last lookups to this tick: time
			// the process could not run, not time the lookups waited for
			// a node's lock (which would be the bug, not a stall).
			if gap := int64(time.Since(last)); gap > stalled.Load() { // the only writer
				stalled.Store(gap)
			}
			for _, n := range all {
				lookups.Add(1)
				if len(n.Live()["web"]) != 4 {
					short.Add(1)
				}
			}
			last = time.Now()
		}
	})

	res := keysOK(t, a, KeyList, nil, 4)
	countsAre(t, "before", res, oldKey, 4, 4)

	// Each step from another node; each is timed (up to every answer),
	// then gossip flows under the new keys before the next: a few packets
	// per node (lan probes once a second), each read with the new keyring.
	const flow = 4
	var took []string
	step := func(from *testNode, op KeyOp, key []byte) KeyResult {
		t.Helper()
		start := time.Now()
		res := keysOK(t, from, op, key, 4)
		took = append(took, fmt.Sprintf("%s %v", op, time.Since(start).Round(100*time.Microsecond)))
		return res
	}
	res = step(a, KeyInstall, newKey)
	countsAre(t, "install", res, oldKey, 4, 4, newKey, 4, 0)
	pc.flowed(t, all, flow)
	res = step(b, KeyUse, newKey)
	countsAre(t, "use", res, newKey, 4, 4, oldKey, 4, 0)
	pc.flowed(t, all, flow)
	res = step(c, KeyRemove, oldKey)
	countsAre(t, "remove", res, newKey, 4, 4)
	pc.flowed(t, all, flow)
	t.Logf("rotation steps on 4 nodes (use and remove include their check): %s", strings.Join(took, ", "))
	res = keysOK(t, d, KeyList, nil, 4)
	countsAre(t, "after", res, newKey, 4, 4)

	close(stop)
	wg.Wait()
	// A process that cannot run for longer than the probe timeout misses
	// acks, and memberlist suspects members whatever the keys; past the
	// suspicion timeout (SuspicionMult x log10(4) probe intervals) it can
	// mark one failed before the refutation is read. A loaded machine does
	// that for seconds at times: those verdicts hold only without such a
	// stall. A failure to decrypt always counts.
	stall := time.Duration(stalled.Load())
	suspicion := time.Duration(float64(profile.SuspicionMult) * math.Log10(4) * float64(profile.ProbeInterval))
	suspectOK, failedOK := stall >= profile.ProbeTimeout, stall >= suspicion
	t.Logf("%d live-set reads during the rotation; the process stalled for %v at most", lookups.Load(), stall.Round(time.Millisecond))
	if short.Load() > 0 || shrank.Load() > 0 {
		report := t.Errorf
		if failedOK {
			report = t.Logf
		}
		report("during the rotation a live set lacked a node %d times in %d reads, and OnChange lost one %d times (longest stall %v)",
			short.Load(), lookups.Load(), shrank.Load(), stall.Round(time.Millisecond))
	}
	for _, n := range all {
		for _, bad := range []struct {
			text     string
			tolerate bool
		}{{"decrypt", false}, {"node failed", failedOK}, {"suspect", suspectOK}} {
			if lines := n.logs.lines(bad.text); len(lines) > 0 {
				report := t.Errorf
				if bad.tolerate {
					report = t.Logf
				}
				report("%s logged %q during the rotation (longest stall %v):\n%s", n.Name(), bad.text, stall.Round(time.Millisecond), strings.Join(lines, "\n"))
			}
		}
		if got := stores[n.Name()].get(); len(got) != 1 || !bytes.Equal(got[0], newKey) {
			t.Errorf("%s saved keyring %v, want only the new key", n.Name(), got)
		}
		if got := n.logs.lines("gossip keyring changed"); len(got) != 3 {
			t.Errorf("%s logged %d keyring changes, want 3", n.Name(), len(got))
		}
		if strings.Contains(n.logs.String(), fmt.Sprintf("%x", newKey[:8])) {
			t.Errorf("%s logged key material", n.Name())
		}
	}

	// A node with only the old key is refused; one with only the new key
	// joins (and, once every node sees it, gossip about the refused one
	// has had its chance to spread).
	stale := startNode(t, "stale", func(cf *Config) { cf.Keys = [][]byte{oldKey} })
	if n, err := stale.Join([]string{a.Addr()}); err == nil || n != 0 {
		t.Fatalf("node with the removed key joined: %d, %v", n, err)
	} else if !strings.Contains(err.Error(), "the gossip encryption keys differ") {
		t.Errorf("stale node's join error does not say why: %v", err)
	}
	fresh := startNode(t, "fresh", func(cf *Config) { cf.Keys = [][]byte{newKey}; seeds(b)(cf) })
	all = append(all, fresh)
	waitFor(t, 10*time.Second, webIs(all, "a", "b", "c", "d", "fresh"))
	for _, n := range all {
		if s := statusOf(n, "stale"); s != "" {
			t.Errorf("%s lists the stale node as %s", n.Name(), s)
		}
	}
	if len(stale.Members()) != 1 {
		t.Errorf("the stale node sees %d members, want only itself", len(stale.Members()))
	}
	waitFor(t, 5*time.Second, func() (bool, string) {
		return len(a.logs.lines("refused gossip from a node of another cluster or with another key", "no installed keys could decrypt")) > 0,
			"a did not log why it refused the stale node"
	})
}

// TestKeySafetyRules: use of a key some node lacks, removal of a primary
// key, malformed keys and unknown operations are refused and change
// nothing anywhere.
func TestKeySafetyRules(t *testing.T) {
	t.Parallel()
	k1, k2, k3 := newKey(t), newKey(t), newKey(t)
	a := startNode(t, "a", func(c *Config) { c.Keys = [][]byte{k1} })
	b := startNode(t, "b", func(c *Config) { c.Keys = [][]byte{k1, k2}; seeds(a)(c) })
	c := startNode(t, "c", func(c *Config) { c.Keys = [][]byte{k1}; seeds(a)(c) })
	all := []*testNode{a, b, c}
	waitFor(t, 10*time.Second, webIs(all, "a", "b", "c"))
	before := keysOK(t, a, KeyList, nil, 3)
	countsAre(t, "before", before, k1, 3, 3, k2, 1, 0)

	ctx := context.Background()
	var refused *KeyRefusedError
	if _, err := b.Keys(ctx, KeyUse, k2); !errors.As(err, &refused) ||
		!strings.Contains(err.Error(), "not installed on 2 of 3 answering nodes (a, c)") {
		t.Errorf("use of a key only b has: %v; want a refusal naming a and c", err)
	}
	if _, err := a.Keys(ctx, KeyUse, k3); !errors.As(err, &refused) || !strings.Contains(err.Error(), "3 of 3") {
		t.Errorf("use of a key nobody has: %v; want a refusal", err)
	}
	if _, err := c.Keys(ctx, KeyRemove, k1); !errors.As(err, &refused) ||
		!strings.Contains(err.Error(), "primary key on 3 of 3 answering nodes") {
		t.Errorf("remove of the primary key: %v; want a refusal", err)
	}
	for _, tc := range []struct {
		op   KeyOp
		key  []byte
		want string
	}{
		{KeyInstall, nil, "key is 0 bytes"},
		{KeyInstall, make([]byte, 15), "key is 15 bytes; want 16, 24 or 32"},
		{KeyUse, make([]byte, 33), "key is 33 bytes"},
		{KeyRemove, []byte("short"), "key is 5 bytes"},
		{"rotate", k1, `unknown operation "rotate"`},
	} {
		if _, err := a.Keys(ctx, tc.op, tc.key); !errors.Is(err, ErrInvalidKey) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s with %d bytes: %v; want ErrInvalidKey with %q", tc.op, len(tc.key), err, tc.want)
		}
	}
	after := keysOK(t, c, KeyList, nil, 3)
	countsAre(t, "after the refusals", after, k1, 3, 3, k2, 1, 0)
	for _, n := range all {
		if lines := n.logs.lines("gossip keyring changed"); len(lines) > 0 {
			t.Errorf("%s changed its keyring: %v", n.Name(), lines)
		}
	}

	// Idempotent: installing a key a node has and removing one it lacks
	// succeed and change nothing there.
	res := keysOK(t, a, KeyInstall, k2, 3)
	countsAre(t, "install k2", res, k1, 3, 3, k2, 3, 0)
	if lines := b.logs.lines("gossip keyring changed"); len(lines) > 0 {
		t.Errorf("b already had k2 but changed its keyring: %v", lines)
	}
	res = keysOK(t, a, KeyRemove, k3, 3)
	countsAre(t, "remove k3", res, k1, 3, 3, k2, 3, 0)

	plain := startNode(t, "plain", nil)
	for _, op := range []KeyOp{KeyList, KeyInstall} {
		if _, err := plain.Keys(ctx, op, k1); !errors.Is(err, ErrNotEncrypted) {
			t.Errorf("%s on an unencrypted node: %v; want ErrNotEncrypted", op, err)
		}
	}
}

// TestKeyChangeReportsMissingNodes: a node that is down misses the change
// and is reported, and so is a node that does not answer in time; the rest
// apply it. The down node, back with its old keyring, cannot rejoin until
// it is given the new key.
func TestKeyChangeReportsMissingNodes(t *testing.T) {
	t.Parallel()
	k1, k2 := newKey(t), newKey(t)
	tun := testTunables()
	// b never answers in time (its save blocks until the change is over);
	// c must, however loaded the machine: seconds, not 500 ms.
	tun.keyTimeout = 3 * time.Second
	slow := &memKeys{block: make(chan struct{})}
	start := func(name string, store KeyStore, seed *testNode) *testNode {
		return startNodeTun(t, name, tun, func(c *Config) {
			c.Keys = [][]byte{k1}
			c.KeyStore = store
			if seed != nil {
				c.Seeds = []string{seed.Addr()}
			}
		})
	}
	a := start("a", &memKeys{}, nil)
	b := start("b", slow, a)
	c := start("c", &memKeys{}, a)
	d := start("d", &memKeys{}, a)
	waitFor(t, 10*time.Second, webIs([]*testNode{a, b, c, d}, "a", "b", "c", "d"))
	if err := d.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, statusIs([]*testNode{a}, "d", StatusFailed))

	res, err := a.Keys(context.Background(), KeyInstall, k2)
	close(slow.block) // b's disk comes back: it applies the change late
	if err != nil {
		t.Fatal(err)
	}
	if res.Answered() != 2 || len(res.Answers) != 4 {
		t.Fatalf("%d of %d answered, want 2 of 4: %+v", res.Answered(), len(res.Answers), res.Answers)
	}
	failed := map[string]string{}
	for _, f := range res.Failed() {
		failed[f.Node] = f.Err
	}
	if want := fmt.Sprintf("no answer within %v", tun.keyTimeout); !strings.Contains(failed["b"], want) {
		t.Errorf("slow node b reported as %q, want %s", failed["b"], want)
	}
	if !strings.Contains(failed["d"], "missed this change") {
		t.Errorf("down node d reported as %q, want that it missed the change", failed["d"])
	}
	countsAre(t, "install with b slow and d down", res, k1, 2, 2, k2, 2, 0)
	// b's late answer is dropped without harm; a later list sees its key.
	waitFor(t, 15*time.Second, func() (bool, string) {
		res, err := a.Keys(context.Background(), KeyList, nil)
		if err != nil || res.Answered() != 3 {
			return false, fmt.Sprintf("list: %d answered, %v", res.Answered(), err)
		}
		ks := res.Keys()
		return len(ks) == 2 && ks[1].Installed == 3, fmt.Sprintf("keys %+v", ks)
	})
	if _, err := a.Keys(context.Background(), KeyUse, k2); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Keys(context.Background(), KeyRemove, k1); err != nil {
		t.Fatal(err)
	}

	// d comes back (same address) with the keyring it had: refused.
	dAddr := d.Addr()
	d2 := startNodeTun(t, "d", tun, func(c *Config) { c.Keys = [][]byte{k1}; c.BindAddr = dAddr })
	if n, err := d2.Join([]string{a.Addr()}); err == nil || n != 0 {
		t.Fatalf("d with the removed key rejoined: %d, %v", n, err)
	}
	_ = d2.Shutdown()
	// Given the new key as primary (its old one still installed), it rejoins.
	d3 := startNodeTun(t, "d", tun, func(c *Config) { c.Keys = [][]byte{k2, k1}; c.BindAddr = dAddr })
	if _, err := d3.Join([]string{a.Addr()}); err != nil {
		t.Fatalf("d with the new key could not rejoin: %v", err)
	}
	waitFor(t, 10*time.Second, statusIs([]*testNode{a, b, c}, "d", StatusAlive))
}

// TestKeySaveFailureIsUndone: a node whose keyring cannot be saved reports
// the error and keeps its keyring as it was.
func TestKeySaveFailureIsUndone(t *testing.T) {
	t.Parallel()
	k1, k2 := newKey(t), newKey(t)
	a := startNode(t, "a", func(c *Config) { c.Keys = [][]byte{k1}; c.KeyStore = &memKeys{} })
	b := startNode(t, "b", func(c *Config) {
		c.Keys = [][]byte{k1}
		c.KeyStore = &memKeys{fail: errors.New("disk full")}
		seeds(a)(c)
	})
	waitFor(t, 10*time.Second, webIs([]*testNode{a, b}, "a", "b"))
	res, err := a.Keys(context.Background(), KeyInstall, k2)
	if err != nil {
		t.Fatal(err)
	}
	if f := res.Failed(); len(f) != 1 || f[0].Node != "b" || !strings.Contains(f[0].Err, "not saved, so undone: disk full") {
		t.Errorf("failed = %+v, want b: not saved, so undone: disk full", f)
	}
	if keys := b.keys.ring.GetKeys(); len(keys) != 1 || !bytes.Equal(keys[0], k1) {
		t.Errorf("b's keyring after the failed save has %d keys, want only k1", len(keys))
	}
	if len(b.logs.lines("gossip keyring change not saved; undone", "disk full")) != 1 {
		t.Error("b did not log the failed save")
	}
}

// TestKeyMessagesFromStrangers: unreadable keyring messages, and requests
// naming a sender that is not a member, are ignored with a log line.
func TestKeyMessagesFromStrangers(t *testing.T) {
	t.Parallel()
	k1, k2 := newKey(t), newKey(t)
	a := startNode(t, "a", func(c *Config) { c.Keys = [][]byte{k1} })
	a.receive([]byte{msgKeyRequest, '{'})
	a.receive([]byte{msgKeyResponse, 0xff})
	a.receive(append([]byte{msgKeyRequest}, fmt.Sprintf(`{"id":1,"from":"mallory","op":"install","key":%q}`, encodeB64(k2))...))
	waitFor(t, 5*time.Second, func() (bool, string) {
		return len(a.logs.lines("ignored keyring request from a node that is not a member", "from=mallory")) == 1,
			"no log line for the stranger's request"
	})
	if len(a.logs.lines("ignored unreadable keyring request")) != 1 || len(a.logs.lines("ignored unreadable keyring answer")) != 1 {
		t.Errorf("unreadable messages not logged:\n%s", a.logs)
	}
	if keys := a.keys.ring.GetKeys(); len(keys) != 1 {
		t.Errorf("a has %d keys after a stranger's request, want 1", len(keys))
	}
}

// TestRefusedJoinsAreLoggedByTheCluster: a node with a wrong key, no key,
// or another cluster label cannot join, and the node it tried says why in
// its log.
func TestRefusedJoinsAreLoggedByTheCluster(t *testing.T) {
	t.Parallel()
	k1, k2 := newKey(t), newKey(t)
	seed := startNode(t, "seed", func(c *Config) { c.Keys = [][]byte{k1}; c.Label = "blue" })
	for _, tc := range []struct {
		name string
		edit func(*Config)
		log  []string // parts of the seed's log line
	}{
		{"wrongkey", func(c *Config) { c.Keys = [][]byte{k2}; c.Label = "blue" },
			[]string{"level=ERROR", "refused gossip from a node of another cluster or with another key", "no installed keys could decrypt"}},
		{"nokey", func(c *Config) { c.Label = "blue" },
			[]string{"level=ERROR", "refused gossip from a node of another cluster or with another key", "not encrypted"}},
		{"otherlabel", func(c *Config) { c.Keys = [][]byte{k1}; c.Label = "green" },
			[]string{"level=ERROR", "refused gossip from a node of another cluster or with another key", "unacceptable label", "green"}},
	} {
		n := startNode(t, tc.name, tc.edit)
		if got, err := n.Join([]string{seed.Addr()}); err == nil || got != 0 {
			t.Errorf("%s joined: %d, %v", tc.name, got, err)
			continue
		}
		waitFor(t, 5*time.Second, func() (bool, string) {
			return len(seed.logs.lines(tc.log...)) > 0, fmt.Sprintf("seed did not log %q for %s:\n%s", tc.log, tc.name, seed.logs)
		})
		if s := statusOf(seed, tc.name); s != "" {
			t.Errorf("seed lists %s as %s", tc.name, s)
		}
	}
}

func encodeB64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
