package discovery

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// lwwState is a fake SharedState: a last-writer-wins map. An entry is the
// line "key\tvalue\tclock\tnode\n"; a message is one entry, a state all of
// them. Malformed lines are skipped.
type lwwState struct {
	node string

	mu      sync.Mutex
	entries map[string]lwwEntry
	clock   uint64
	viaMsg  map[string]bool // keys seen in a message (changed or not)
	states  int             // MergeState calls
	// bcast sends a message; set once the node is started.
	bcast func(key string, msg []byte)
}

type lwwEntry struct {
	value string
	clock uint64
	node  string
}

func newLWW(node string) *lwwState {
	return &lwwState{node: node, entries: make(map[string]lwwEntry), viaMsg: make(map[string]bool)}
}

var _ SharedState = (*lwwState)(nil)

func (e lwwEntry) newerThan(o lwwEntry) bool {
	return e.clock > o.clock || (e.clock == o.clock && e.node > o.node)
}

func appendEntry(b []byte, key string, e lwwEntry) []byte {
	b = append(b, key...)
	b = append(b, '\t')
	b = append(b, e.value...)
	b = append(b, '\t')
	b = strconv.AppendUint(b, e.clock, 10)
	b = append(b, '\t')
	b = append(b, e.node...)
	return append(b, '\n')
}

// set writes key locally with a clock above any seen, and broadcasts it.
func (s *lwwState) set(key, value string) {
	s.mu.Lock()
	s.clock++
	e := lwwEntry{value: value, clock: s.clock, node: s.node}
	s.entries[key] = e
	bcast := s.bcast
	s.mu.Unlock()
	if bcast != nil {
		bcast(key, appendEntry(nil, key, e))
	}
}

// fill writes count entries without broadcasting them.
func (s *lwwState) fill(prefix string, count int, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range count {
		s.clock++
		s.entries[prefix+strconv.Itoa(i)] = lwwEntry{value: value, clock: s.clock, node: s.node}
	}
}

func (s *lwwState) get(key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entries[key].value
}

func (s *lwwState) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

func (s *lwwState) snapshot() map[string]lwwEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.entries)
}

func (s *lwwState) sawMsg(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.viaMsg[key]
}

func (s *lwwState) stateMerges() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.states
}

func (s *lwwState) LocalState() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b []byte
	for k, e := range s.entries {
		b = appendEntry(b, k, e)
	}
	return b
}

func (s *lwwState) MergeState(buf []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states++
	s.mergeLocked(buf, false)
}

func (s *lwwState) MergeMessage(buf []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mergeLocked(buf, true)
}

func (s *lwwState) mergeLocked(buf []byte, msg bool) {
	for line := range bytes.SplitSeq(buf, []byte{'\n'}) {
		f := strings.Split(string(line), "\t") // copies: buf is not ours
		if len(f) != 4 {
			continue
		}
		clock, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			continue
		}
		key, e := f[0], lwwEntry{value: f[1], clock: clock, node: f[3]}
		if msg {
			s.viaMsg[key] = true
		}
		s.clock = max(s.clock, clock)
		if cur, ok := s.entries[key]; !ok || e.newerThan(cur) {
			s.entries[key] = e
		}
	}
}

type stateNode struct {
	*testNode
	state *lwwState
}

// startStateNode starts a node with an lwwState (a new one if st is nil).
func startStateNode(t *testing.T, name string, st *lwwState, tun tunables, edit func(*Config)) *stateNode {
	t.Helper()
	if st == nil {
		st = newLWW(name)
	}
	n := startNodeTun(t, name, tun, func(c *Config) {
		c.SharedState = st
		if edit != nil {
			edit(c)
		}
	})
	st.mu.Lock()
	st.bcast = n.Broadcast
	st.mu.Unlock()
	return &stateNode{testNode: n, state: st}
}

func testNodes(nodes []*stateNode) []*testNode {
	out := make([]*testNode, len(nodes))
	for i, n := range nodes {
		out[i] = n.testNode
	}
	return out
}

// valueIs reports whether every node has key = want.
func valueIs(nodes []*stateNode, key, want string) func() (bool, string) {
	return func() (bool, string) {
		for _, n := range nodes {
			if got := n.state.get(key); got != want {
				return false, fmt.Sprintf("%s: %s = %q, want %q", n.Name(), key, got, want)
			}
		}
		return true, ""
	}
}

// converged reports whether every node holds the same entries, at least
// atLeast of them.
func converged(nodes []*stateNode, atLeast int) func() (bool, string) {
	return func() (bool, string) {
		first := nodes[0].state.snapshot()
		if len(first) < atLeast {
			return false, fmt.Sprintf("%s has %d entries, want at least %d", nodes[0].Name(), len(first), atLeast)
		}
		for _, n := range nodes[1:] {
			if got := n.state.snapshot(); !maps.Equal(got, first) {
				return false, fmt.Sprintf("%s has %d entries, %s %d, or they differ", n.Name(), len(got), nodes[0].Name(), len(first))
			}
		}
		return true, ""
	}
}

// startThreeState starts a, then b and c with a as their seed, each with an
// lwwState, and waits until all three see all three.
func startThreeState(t *testing.T, tun tunables, edit func(*Config)) []*stateNode {
	t.Helper()
	a := startStateNode(t, "a", nil, tun, edit)
	b := startStateNode(t, "b", nil, tun, func(c *Config) { seeds(a.testNode)(c); orNoop(edit)(c) })
	c := startStateNode(t, "c", nil, tun, func(c *Config) { seeds(a.testNode)(c); orNoop(edit)(c) })
	all := []*stateNode{a, b, c}
	waitFor(t, 10*time.Second, webIs(testNodes(all), "a", "b", "c"))
	return all
}

// orNoop returns edit, or a function that does nothing for a nil edit.
func orNoop(edit func(*Config)) func(*Config) {
	if edit == nil {
		return func(*Config) {}
	}
	return edit
}

// (a) A broadcast on one node is merged on all, by message; one too large
// for a gossip packet too (over TCP).
func TestBroadcastReachesAll(t *testing.T) {
	t.Parallel()
	all := startThreeState(t, testTunables(), nil)
	a := all[0]

	start := time.Now()
	a.state.set("beta.example.com", "10.0.0.9:3000")
	waitFor(t, 5*time.Second, valueIs(all, "beta.example.com", "10.0.0.9:3000"))
	for _, n := range all[1:] {
		if !n.state.sawMsg("beta.example.com") {
			t.Errorf("%s got the change, but not by message", n.Name())
		}
	}
	t.Logf("small broadcast merged everywhere in %v", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	big := strings.Repeat("x", 64<<10)
	a.state.set("big", big)
	waitFor(t, 5*time.Second, valueIs(all, "big", big))
	for _, n := range all[1:] {
		if !n.state.sawMsg("big") {
			t.Errorf("%s got the large change, but not by message", n.Name())
		}
	}
	if got := a.gossip.sent.Load(); got != 1 {
		t.Errorf("%d broadcasts sent over TCP, want 1", got)
	}
	t.Logf("64 KiB broadcast merged everywhere in %v", time.Since(start).Round(time.Millisecond))

	// Newest per key: only the last of a burst needs to arrive, and does.
	for i := range 50 {
		a.state.set("burst", strconv.Itoa(i))
	}
	waitFor(t, 5*time.Second, valueIs(all, "burst", "49"))
}

// The largest payload that fits a gossip packet is gossiped (and arrives),
// one byte more goes over TCP (and arrives), with and without encryption and
// a cluster label.
func TestBroadcastSizeBoundary(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		maxBody int // largest Broadcast payload gossiped
		edit    func(*Config)
	}{
		{"plain", 1394, nil},
		{"encrypted+label", 1394 - 45 - (2 + len("blue")), func(c *Config) {
			c.Keys = [][]byte{bytes.Repeat([]byte{7}, 32)}
			c.Label = "blue"
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := startStateNode(t, "a", nil, testTunables(), tc.edit)
			b := startStateNode(t, "b", nil, testTunables(), func(c *Config) { orNoop(tc.edit)(c); seeds(a.testNode)(c) })
			both := []*stateNode{a, b}
			waitFor(t, 10*time.Second, webIs(testNodes(both), "a", "b"))
			if got := a.gossip.gossipMax - 1; got != tc.maxBody {
				t.Errorf("largest gossiped payload %d, want %d", got, tc.maxBody)
			}
			for _, extra := range []int{0, 1} {
				key := fmt.Sprintf("k%d", extra)
				// Sized so that the whole entry line is the payload.
				line := appendEntry(nil, key, lwwEntry{clock: 1000 + uint64(extra), node: "a"})
				value := strings.Repeat("v", tc.maxBody+extra-len(line))
				before := a.gossip.sent.Load()
				a.state.mu.Lock()
				e := lwwEntry{value: value, clock: 1000 + uint64(extra), node: "a"}
				a.state.entries[key] = e
				a.state.mu.Unlock()
				msg := appendEntry(nil, key, e)
				if len(msg) != tc.maxBody+extra {
					t.Fatalf("payload %d bytes, want %d", len(msg), tc.maxBody+extra)
				}
				a.Broadcast(key, msg)
				waitFor(t, 5*time.Second, func() (bool, string) {
					return b.state.sawMsg(key), fmt.Sprintf("%d-byte broadcast not received", len(msg))
				})
				if tcp := a.gossip.sent.Load() - before; tcp != int64(extra) {
					t.Errorf("%d-byte payload: %d sent over TCP, want %d", len(msg), tcp, extra)
				}
			}
		})
	}
}

// State that was never broadcast reaches the other node, both ways, by the
// periodic push/pull (every 5 s with the fast profile; 200 ms here).
func TestPeriodicPushPullCarriesState(t *testing.T) {
	t.Parallel()
	tun := testTunables()
	tun.pushPullInterval = 200 * time.Millisecond
	a := startStateNode(t, "a", nil, tun, nil)
	b := startStateNode(t, "b", nil, tun, seeds(a.testNode))
	both := []*stateNode{a, b}
	waitFor(t, 10*time.Second, webIs(testNodes(both), "a", "b"))
	merges := a.state.stateMerges() + b.state.stateMerges()
	start := time.Now()
	a.state.fill("quiet-a-", 10, "1")
	b.state.fill("quiet-b-", 10, "1")
	waitFor(t, 5*time.Second, converged(both, 20))
	if a.state.stateMerges()+b.state.stateMerges() == merges {
		t.Error("converged without a state exchange")
	}
	t.Logf("converged by push/pull %v after the change", time.Since(start).Round(time.Millisecond))
}

// (b) A node that was down while 100 changes were broadcast converges when
// it restarts and rejoins, through the join's state exchange.
func TestSharedStateCatchesUpAfterRestart(t *testing.T) {
	t.Parallel()
	// Gossip is best effort: on a loaded machine a few of the 100
	// broadcasts get lost, and push/pull repairs them (every 1 s here).
	tun := testTunables()
	tun.pushPullInterval = time.Second
	all := startThreeState(t, tun, nil)
	a, b, c := all[0], all[1], all[2]
	a.state.set("before", "1")
	waitFor(t, 10*time.Second, valueIs(all, "before", "1"))

	addr := c.Addr()
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		writer := a
		if i%2 == 1 {
			writer = b
		}
		writer.state.set("host"+strconv.Itoa(i), "10.0.0."+strconv.Itoa(i)+":80")
	}
	waitFor(t, 10*time.Second, converged([]*stateNode{a, b}, 101))
	waitFor(t, 5*time.Second, statusIs([]*testNode{a.testNode, b.testNode}, "c", StatusFailed))
	if n := c.state.len(); n != 1 {
		t.Fatalf("stopped node has %d entries, want 1", n)
	}

	// Restarted with what it had stored (its old state), on its address.
	start := time.Now()
	merges := c.state.stateMerges()
	c2 := startStateNode(t, "c", c.state, tun, func(cfg *Config) {
		cfg.BindAddr = addr
		seeds(a.testNode)(cfg)
	})
	all = []*stateNode{a, b, c2}
	waitFor(t, 10*time.Second, converged(all, 101))
	if c2.state.stateMerges() == merges {
		t.Error("restarted node converged without a state exchange")
	}
	t.Logf("restarted node converged %v after starting", time.Since(start).Round(time.Millisecond))
}

// (c) A 2|1 partition with conflicting writes on both sides converges to
// one value everywhere once healed.
func TestSharedStatePartitionHeals(t *testing.T) {
	t.Parallel()
	cut := newNetCut()
	a := startStateNode(t, "a", nil, cut.tunables(), nil)
	// b reconnects less often than a: usually a's rejoin makes c alive in
	// b's view before b's next attempt, and b must still exchange state
	// with c (reconnectLoop's resync) instead of waiting for a random
	// push/pull. c does not reconnect at all: a's rejoin heals the split.
	slow := cut.tunables()
	slow.reconnectEvery = 400 * time.Millisecond
	bLogs := &logBuffer{}
	b := startStateNode(t, "b", nil, slow, func(cfg *Config) {
		seeds(a.testNode)(cfg)
		cfg.Logger = newDebugLogger(bLogs).With("self", "b")
	})
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("DISCOVERY_LOGS") != "" {
			t.Logf("b's logs:\n%s", bLogs)
		}
	})
	never := cut.tunables()
	never.reconnectEvery = time.Hour
	c := startStateNode(t, "c", nil, never, seeds(a.testNode))
	all := []*stateNode{a, b, c}
	waitFor(t, 10*time.Second, webIs(testNodes(all), "a", "b", "c"))
	left, right := []*testNode{a.testNode, b.testNode}, []*testNode{c.testNode}

	start := time.Now()
	cut.split(left, right)
	waitFor(t, 10*time.Second, statusIs(left, "c", StatusFailed))
	waitFor(t, 10*time.Second, statusIs(right, "a", StatusFailed))
	waitFor(t, 10*time.Second, statusIs(right, "b", StatusFailed))
	t.Logf("partition seen by both sides in %v", time.Since(start).Round(time.Millisecond))

	// Conflicting writes; c's is the later one (higher clock), so b, which
	// never talked to c, must learn it after the heal.
	a.state.set("x", "left")
	c.state.set("x", "right-0")
	c.state.set("x", "right")
	a.state.set("only-left", "1")
	c.state.set("only-right", "1")
	// By gossip, or if it was lost, b's next push/pull with a.
	waitFor(t, 12*time.Second, valueIs([]*stateNode{a, b}, "x", "left"))
	// The cut holds: c kept its own value and never heard of the other side's.
	if got := c.state.get("x"); got != "right" {
		t.Fatalf("c: x = %q across the cut", got)
	}
	if got := c.state.get("only-left"); got != "" {
		t.Fatalf("c learnt only-left across the cut")
	}

	// Until their retransmits run out, queued broadcasts would cross the
	// healed cut by themselves: let them, so that state exchanges must
	// do the work.
	waitFor(t, 5*time.Second, func() (bool, string) {
		for _, n := range all {
			if q := n.gossip.queue.NumQueued(); q > 0 {
				return false, fmt.Sprintf("%s still has %d broadcasts queued", n.Name(), q)
			}
		}
		return true, ""
	})

	start = time.Now()
	cut.heal()
	waitFor(t, 10*time.Second, converged(all, 3))
	waitFor(t, 5*time.Second, valueIs(all, "x", "right"))
	waitFor(t, 10*time.Second, webIs(testNodes(all), "a", "b", "c"))
	t.Logf("converged %v after the heal", time.Since(start).Round(time.Millisecond))
	// b saw c fail: whoever brought c back, b's own loop exchanges state
	// with c, by a rejoin or, when c was already back, by a resync.
	waitFor(t, 5*time.Second, func() (bool, string) {
		rejoin := len(bLogs.lines("reconnected to a failed member", c.Addr()))
		resync := len(bLogs.lines("exchanged state with a recovered member", c.Addr()))
		if rejoin+resync == 0 {
			return false, "b did not exchange state with c after the heal"
		}
		t.Logf("b exchanged state with c by %d rejoins and %d resyncs", rejoin, resync)
		return true, ""
	})
}

// (d) A state of ~2 MB is exchanged, both ways, on join (encrypted).
func TestBigStateOnJoin(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{9}, 32)
	encrypt := func(c *Config) { c.Keys = [][]byte{key} }
	a := startStateNode(t, "a", nil, testTunables(), encrypt)
	// ~100 bytes an entry, like an override with its version.
	value := "backend-" + strings.Repeat("0", 54) + ".example.com:8080"
	a.state.fill("host-a-", 21000, value)
	size := len(a.state.LocalState())
	if size < 2<<20 {
		t.Fatalf("state is %d bytes, want 2 MB or more", size)
	}
	bst := newLWW("b")
	bst.fill("host-b-", 100, value)

	start := time.Now()
	b := startStateNode(t, "b", bst, testTunables(), func(c *Config) { encrypt(c); seeds(a.testNode)(c) })
	waitFor(t, 20*time.Second, func() (bool, string) {
		na, nb := a.state.len(), b.state.len()
		return na == 21100 && nb == 21100, fmt.Sprintf("a has %d entries, b %d, want 21100", na, nb)
	})
	t.Logf("%d-byte state exchanged on join in %v", size, time.Since(start).Round(time.Millisecond))
	waitFor(t, 5*time.Second, converged([]*stateNode{a, b}, 21100))
}

// Nil SharedState, empty and garbage input, unknown kinds and formats: no
// panic, nothing merged, a debug line for what is ignored.
func TestSharedStateFraming(t *testing.T) {
	_, logs := newTestLogger(t)
	debug := newDebugLogger(logs)
	for _, st := range []*lwwState{nil, newLWW("x")} {
		n := &Node{log: debug}
		if st != nil {
			n.cfg.SharedState = st
		}
		d := delegates{n}
		for _, buf := range [][]byte{nil, {}, {0}, {msgShared}, {99, 1, 2}, {msgShared, 0xff, '\t', '\n'}, []byte("\x01garbage")} {
			d.NotifyMsg(buf)
			d.MergeRemoteState(buf, true)
			d.MergeRemoteState(buf, false)
		}
		if got := d.LocalState(true); st == nil && got != nil {
			t.Errorf("LocalState without SharedState = %q, want nil", got)
		}
		if st != nil {
			if st.len() != 0 {
				t.Errorf("garbage merged: %v", st.snapshot())
			}
			if got := d.LocalState(false); got != nil {
				t.Errorf("LocalState of an empty state = %q, want nil", got)
			}
			st.fill("k", 1, "v")
			got := d.LocalState(true)
			if len(got) == 0 || got[0] != stateFormat1 || !bytes.Equal(got[1:], st.LocalState()) {
				t.Errorf("LocalState = %q, want the format byte and the state", got)
			}
			other := newLWW("y")
			n.cfg.SharedState = other
			d.MergeRemoteState(got, true)
			d.NotifyMsg(append([]byte{msgShared}, appendEntry(nil, "m", lwwEntry{value: "1", clock: 5, node: "x"})...))
			if other.get("k0") != "v" || other.get("m") != "1" {
				t.Errorf("framed state and message not merged: %v", other.snapshot())
			}
		}
	}
	for _, want := range []string{"unknown kind", "unknown format", "empty gossip message"} {
		if len(logs.lines(want)) == 0 {
			t.Errorf("no debug line %q:\n%s", want, logs)
		}
	}
}

// newDebugLogger logs into buf at debug level, whatever DISCOVERY_DEBUG says.
func newDebugLogger(buf *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// hugeState is a SharedState whose LocalState is larger than any exchange
// accepts.
type hugeState struct{ size int }

func (h hugeState) LocalState() []byte { return make([]byte, h.size) }
func (hugeState) MergeState([]byte)    {}
func (hugeState) MergeMessage([]byte)  {}

// A state too large for memberlist is not sent (memberlist would refuse the
// whole exchange, membership included) and an error says so, once.
func TestStateTooLargeNotSent(t *testing.T) {
	_, logs := newTestLogger(t)
	n := &Node{log: newDebugLogger(logs), cfg: Config{SharedState: hugeState{MaxStateBytes + 1}}}
	d := delegates{n}
	for range 3 {
		if got := d.LocalState(false); got != nil {
			t.Fatalf("LocalState of %d bytes returned %d bytes, want nil", MaxStateBytes+1, len(got))
		}
	}
	if lines := logs.lines("shared state too large", "limit=20971519"); len(lines) != 1 {
		t.Errorf("%d 'too large' lines, want 1:\n%s", len(lines), logs)
	}
	n.cfg.SharedState = hugeState{MaxStateBytes}
	if got := d.LocalState(false); len(got) != MaxStateBytes+1 {
		t.Errorf("LocalState of MaxStateBytes returned %d bytes, want %d", len(got), MaxStateBytes+1)
	}
	if lines := logs.lines("over half the size"); len(lines) != 1 {
		t.Errorf("%d 'over half' lines, want 1", len(lines))
	}
}

func TestOversizedQueue(t *testing.T) {
	q := oversizedQueue{wake: make(chan struct{}, 1)}
	q.push("a", []byte("1"))
	q.push("b", []byte("2"))
	q.push("a", []byte("3")) // replaces a's pending message in place
	q.push("", []byte("4"))
	q.push("", []byte("5")) // empty keys replace nothing
	q.forget("b")
	var got []string
	for {
		m, ok := q.pop()
		if !ok {
			break
		}
		got = append(got, m.key+"="+string(m.msg))
	}
	if want := []string{"a=3", "=4", "=5"}; !slices.Equal(got, want) {
		t.Errorf("popped %v, want %v", got, want)
	}
	for i := range maxOversizedPending {
		q.push(strconv.Itoa(i), nil)
	}
	if dropped, ok := q.push("last", nil); !ok || dropped.key != "0" {
		t.Errorf("push on a full queue dropped %q, %v; want the oldest, 0", dropped.key, ok)
	}
}

// Broadcast's gossip queue: newest per key, bounded, and the framing byte.
func TestBroadcastQueue(t *testing.T) {
	_, logs := newTestLogger(t)
	n := &Node{done: make(chan struct{})}
	n.gossip = newBroadcaster(newDebugLogger(logs), nil, func() int { return 3 }, 1, 100, nil)
	n.Broadcast("k", []byte("old"))
	n.Broadcast("k", []byte("new"))
	n.Broadcast("", []byte("u1"))
	n.Broadcast("", []byte("u2"))
	if q := n.gossip.queue.NumQueued(); q != 3 {
		t.Errorf("%d queued, want 3 (k once, two unkeyed)", q)
	}
	msgs := n.gossip.queue.GetBroadcasts(0, 10000)
	var got []string
	for _, m := range msgs {
		if m[0] != msgShared {
			t.Errorf("message %q lacks the kind byte", m)
		}
		got = append(got, string(m[1:]))
	}
	slices.Sort(got)
	if want := []string{"new", "u1", "u2"}; !slices.Equal(got, want) {
		t.Errorf("broadcasts %v, want %v", got, want)
	}
	for i := range maxQueuedBroadcasts + 10 {
		n.Broadcast(strconv.Itoa(i), []byte("x"))
	}
	if q := n.gossip.queue.NumQueued(); q > maxQueuedBroadcasts {
		t.Errorf("%d queued, over the bound %d", q, maxQueuedBroadcasts)
	}
	if len(logs.lines("gossip queue full")) != 1 {
		t.Errorf("no single 'gossip queue full' warning:\n%s", logs)
	}
	// Too large to gossip: queued for TCP, not for gossip.
	before := n.gossip.queue.NumQueued()
	n.Broadcast("big", make([]byte, 100))
	if n.gossip.queue.NumQueued() != before {
		t.Error("a message over gossipMax was queued for gossip")
	}
	if m, ok := n.gossip.big.pop(); !ok || m.key != "big" || len(m.msg) != 101 {
		t.Errorf("oversized queue holds %q (%d bytes), %v; want big, 101 bytes", m.key, len(m.msg), ok)
	}
	close(n.done)
	before = n.gossip.queue.NumQueued()
	n.Broadcast("after", []byte("x"))
	if _, ok := n.gossip.big.pop(); ok || n.gossip.queue.NumQueued() != before {
		t.Error("Broadcast after Shutdown queued something")
	}
}

// sizedState is a SharedState of a fixed size, override-like text, that
// records the size of what it merges.
type sizedState struct {
	buf    []byte
	merged chan int
}

func newSizedState(size int) *sizedState {
	// Distinct entries: LZW compresses them about 2.5 times, where a
	// repeated line would compress 100 times.
	buf := make([]byte, 0, size+100)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; len(buf) < size; i++ {
		buf = fmt.Appendf(buf, "%x-%d.%s.example.com\t10.%d.%d.%d:%d\t%d\tnode-%d\n",
			rng.Uint32(), i, []string{"shop", "blog", "api", "cdn"}[i%4], rng.IntN(256), rng.IntN(256), rng.IntN(256),
			1024+rng.IntN(60000), 1767225600000<<16+uint64(i), rng.IntN(50))
	}
	return &sizedState{buf: buf[:size], merged: make(chan int, 16)}
}

func (s *sizedState) LocalState() []byte      { return s.buf }
func (s *sizedState) MergeState(buf []byte)   { s.merged <- len(buf) }
func (s *sizedState) MergeMessage(buf []byte) {}

// rawState is a memberlist delegate that sends a user state as is, without
// Node's size check.
type rawState struct{ buf []byte }

func (rawState) NodeMeta(int) []byte {
	return meta{Fingerprint: "fp-1", Version: "test"}.encode()
}
func (rawState) NotifyMsg([]byte)                {}
func (rawState) GetBroadcasts(int, int) [][]byte { return nil }
func (d rawState) LocalState(bool) []byte        { return d.buf }
func (rawState) MergeRemoteState([]byte, bool)   {}

// TestStateSizeLimit measures memberlist's push/pull limit: a state of
// MaxStateBytes crosses a join; a raw user state one byte over memberlist's
// limit makes the join fail. It moves ~100 MB, so it runs only with
// DISCOVERY_BIG_STATE=1.
func TestStateSizeLimit(t *testing.T) {
	if os.Getenv("DISCOVERY_BIG_STATE") == "" {
		t.Skip("set DISCOVERY_BIG_STATE=1 to exchange 20 MiB states")
	}
	for _, encrypted := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypted=%v", encrypted), func(t *testing.T) {
			var keys [][]byte
			if encrypted {
				keys = [][]byte{bytes.Repeat([]byte{3}, 32)}
			}
			seedState := newSizedState(MaxStateBytes)
			seed := startNode(t, "seed", func(c *Config) { c.Keys = keys; c.SharedState = seedState })

			// Exactly MaxStateBytes, both ways, through Node.
			joinState := newSizedState(MaxStateBytes)
			start := time.Now()
			j := startNode(t, "joiner", func(c *Config) { c.Keys = keys; c.SharedState = joinState })
			if _, err := j.Join([]string{seed.Addr()}); err != nil {
				t.Fatalf("join with %d-byte states: %v", MaxStateBytes, err)
			}
			t.Logf("join with two %d-byte states took %v", MaxStateBytes, time.Since(start).Round(time.Millisecond))
			for _, st := range []*sizedState{seedState, joinState} {
				if got := <-st.merged; got != MaxStateBytes {
					t.Errorf("merged %d bytes, want %d", got, MaxStateBytes)
				}
			}

			// A raw memberlist sending memberlist's limit, then one byte
			// more; then incompressible bytes, which LZW makes 1.37 times
			// larger: too large once encrypted (the limit then applies to
			// the compressed, encrypted message), fine otherwise.
			random := make([]byte, maxPushStateBytes)
			rng := rand.NewChaCha8([32]byte{1})
			_, _ = rng.Read(random)
			cases := []struct {
				name string
				buf  []byte
				ok   bool
			}{
				{"limit", newSizedState(maxPushStateBytes).buf, true},
				{"limit+1", newSizedState(maxPushStateBytes + 1).buf, false},
				{"random", random, !encrypted},
			}
			for _, tc := range cases {
				size := len(tc.buf)
				c := memberlist.DefaultLANConfig()
				c.Name = "raw-" + tc.name
				c.BindAddr, c.BindPort = "127.0.0.1", 0
				c.Delegate = rawState{buf: tc.buf}
				c.LogOutput = &logBuffer{}
				if encrypted {
					c.SecretKey = keys[0]
				}
				ml, err := memberlist.Create(c)
				if err != nil {
					t.Fatal(err)
				}
				_, err = ml.Join([]string{seed.Addr()})
				_ = ml.Shutdown()
				t.Logf("raw user state %s, %d bytes: join error %v", tc.name, size, err)
				if (err == nil) != tc.ok {
					t.Errorf("raw user state %s, %d bytes: join error %v, want success %v", tc.name, size, err, tc.ok)
				}
				for len(seedState.merged) > 0 {
					<-seedState.merged
				}
			}
		})
	}
}
