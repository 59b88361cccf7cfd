package discovery

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// startThree starts a, then b and c with a as their seed, and waits until
// all three see all three.
func startThree(t *testing.T) (a, b, c *testNode) {
	t.Helper()
	a = startNode(t, "a", nil)
	b = startNode(t, "b", seeds(a))
	c = startNode(t, "c", seeds(a))
	all := []*testNode{a, b, c}
	waitFor(t, 10*time.Second, webIs(all, "a", "b", "c"))
	return a, b, c
}

func TestJoinThreeNodes(t *testing.T) {
	t.Parallel()
	a, b, c := startThree(t)
	for _, n := range []*testNode{a, b, c} {
		if !n.Joined() {
			t.Errorf("%s: Joined() = false", n.Name())
		}
		ms := n.Members()
		if len(ms) != 3 {
			t.Fatalf("%s: %d members, want 3: %+v", n.Name(), len(ms), ms)
		}
		for i, want := range []*testNode{a, b, c} {
			m := ms[i]
			if m.Name != want.Name() || m.Addr != want.Addr() || m.Status != StatusAlive ||
				m.Fingerprint != "fp-1" || m.Version != "test" ||
				!slices.Equal(m.Services["web"], []string{instanceOf(want.Name())}) {
				t.Errorf("%s: member %d = %+v, want %s at %s, alive", n.Name(), i, m, want.Name(), want.Addr())
			}
		}
	}
	// The event loop logs a moment after the view changes.
	waitFor(t, 5*time.Second, func() (bool, string) {
		return len(b.logs.lines("node joined", "self=b", "node=a", "a.test:80")) == 1, "b did not log a's join with its instances"
	})
}

func TestCrashIsFailed(t *testing.T) {
	t.Parallel()
	a, b, c := startThree(t)
	start := time.Now()
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	survivors := []*testNode{a, b}
	waitFor(t, 10*time.Second, webIs(survivors, "a", "b"))
	waitFor(t, 5*time.Second, statusIs(survivors, "c", StatusFailed))
	t.Logf("crash detected by every survivor in %v (fast profile)", time.Since(start).Round(time.Millisecond))
	waitFor(t, 5*time.Second, func() (bool, string) {
		n := len(a.logs.lines("node failed", "node=c"))
		return n == 1, fmt.Sprintf("a logged %d 'node failed' lines for c, want 1", n)
	})
}

func TestGracefulLeave(t *testing.T) {
	t.Parallel()
	a, b, c := startThree(t)
	start := time.Now()
	if err := c.Leave(10 * time.Second); err != nil {
		t.Fatalf("leave: %v", err)
	}
	left := time.Since(start)
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	survivors := []*testNode{a, b}
	waitFor(t, 5*time.Second, statusIs(survivors, "c", StatusLeft))
	waitFor(t, 5*time.Second, webIs(survivors, "a", "b"))
	t.Logf("Leave returned in %v; left everywhere %v after it started", left.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	// Calls after Shutdown fail cleanly instead of reaching memberlist.
	if err := c.Leave(time.Second); err != ErrShutdown {
		t.Errorf("Leave after Shutdown = %v, want ErrShutdown", err)
	}
	if err := c.SetDraining(true); err != ErrShutdown {
		t.Errorf("SetDraining after Shutdown = %v, want ErrShutdown", err)
	}
	if _, err := c.Join([]string{a.Addr()}); err != ErrShutdown {
		t.Errorf("Join after Shutdown = %v, want ErrShutdown", err)
	}
	if err := c.Shutdown(); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func TestDrainUndrain(t *testing.T) {
	t.Parallel()
	a, b, c := startThree(t)
	all := []*testNode{a, b, c}
	if err := b.SetDraining(true); err != nil {
		t.Fatal(err)
	}
	if !b.Draining() {
		t.Error("Draining() = false after SetDraining(true)")
	}
	waitFor(t, 5*time.Second, webIs(all, "a", "c"))
	waitFor(t, 5*time.Second, statusIs(all, "b", StatusDraining))
	if err := b.SetDraining(false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, webIs(all, "a", "b", "c"))
	waitFor(t, 5*time.Second, statusIs(all, "b", StatusAlive))
	waitFor(t, 5*time.Second, func() (bool, string) {
		d, u := len(a.logs.lines("node drained", "node=b")), len(a.logs.lines("node undrained", "node=b"))
		return d == 1 && u == 1, fmt.Sprintf("a logged b's drain %d times and undrain %d times, want once each", d, u)
	})
}

func TestCheckDrain(t *testing.T) {
	t.Parallel()
	var status atomic.Int32
	status.Store(http.StatusOK)
	var polls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		polls.Add(1)
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()

	a := startNode(t, "a", nil)
	b := startNode(t, "b", func(c *Config) {
		seeds(a)(c)
		c.Check = Check{URL: srv.URL + "/health", Interval: 20 * time.Millisecond, Timeout: time.Second}
	})
	all := []*testNode{a, b}
	waitFor(t, 10*time.Second, webIs(all, "a", "b"))

	status.Store(http.StatusServiceUnavailable)
	waitFor(t, 5*time.Second, webIs(all, "a"))
	waitFor(t, 5*time.Second, statusIs(all, "b", StatusDraining))
	if !b.Draining() {
		t.Error("Draining() = false while the check fails")
	}
	waitFor(t, 5*time.Second, func() (bool, string) {
		for _, m := range a.Members() {
			if m.Name == "b" && m.CheckFailing {
				return true, ""
			}
		}
		return false, "a does not see b's check failing"
	})
	// Many failing polls, one log line.
	p := polls.Load()
	waitFor(t, 5*time.Second, func() (bool, string) {
		return polls.Load() >= p+5, fmt.Sprintf("%d polls since failing, want 5", polls.Load()-p)
	})
	if n := len(b.logs.lines("health check failing")); n != 1 {
		t.Errorf("%d 'health check failing' lines, want 1", n)
	}

	// A manual drain is a separate reason: the node stays drained until
	// both are gone.
	if err := b.SetDraining(true); err != nil {
		t.Fatal(err)
	}
	status.Store(http.StatusOK)
	waitFor(t, 5*time.Second, func() (bool, string) {
		return len(b.logs.lines("health check passing again")) == 1, "check did not pass again"
	})
	if ok, why := statusIs(all, "b", StatusDraining)(); !ok {
		t.Errorf("manual drain lost when the check passed: %s", why)
	}
	waitFor(t, 5*time.Second, func() (bool, string) {
		for _, m := range a.Members() {
			if m.Name == "b" && !m.CheckFailing {
				return true, ""
			}
		}
		return false, "a still sees b's check failing after it passed"
	})
	if err := b.SetDraining(false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, webIs(all, "a", "b"))
	waitFor(t, 5*time.Second, statusIs(all, "b", StatusAlive))
}

func TestCheckFailingAtStartStartsDrained(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	var first map[string][]string
	b := startNode(t, "b", func(c *Config) {
		c.Check = Check{URL: srv.URL, Interval: time.Hour}
		c.OnChange = func(live map[string][]string) {
			if first == nil {
				first = live
			}
		}
	})
	if !b.Draining() || len(first) != 0 {
		t.Errorf("Draining() = %v, first OnChange = %v; want drained from the start", b.Draining(), first)
	}
}

var barrierNodes atomic.Int32

// refusedBoth checks that x and y stay out of each other's views after a
// barrier: a new node z joins x, and once x and z see each other, any
// gossip about y has had its chance to spread.
func refusedBoth(t *testing.T, x, y *testNode) {
	t.Helper()
	name := fmt.Sprintf("z%d", barrierNodes.Add(1))
	z := startNode(t, name, func(c *Config) {
		c.Fingerprint, c.Label, c.Keys = x.cfg.Fingerprint, x.cfg.Label, x.cfg.Keys
		c.Seeds = []string{x.Addr()}
	})
	waitFor(t, 10*time.Second, func() (bool, string) {
		if ok, why := statusIs([]*testNode{x}, z.Name(), StatusAlive)(); !ok {
			return false, why
		}
		return statusIs([]*testNode{z}, x.Name(), StatusAlive)()
	})
	for _, n := range []*testNode{x, z} {
		if s := statusOf(n, y.Name()); s != "" {
			t.Errorf("%s lists refused node %s as %s", n.Name(), y.Name(), s)
		}
		if slices.Contains(n.Live()["web"], instanceOf(y.Name())) {
			t.Errorf("%s has refused node %s in its live view", n.Name(), y.Name())
		}
		if s := statusOf(y, n.Name()); s != "" {
			t.Errorf("refused node %s lists %s as %s", y.Name(), n.Name(), s)
		}
		if slices.Contains(y.Live()["web"], instanceOf(n.Name())) {
			t.Errorf("refused node %s has %s in its live view", y.Name(), n.Name())
		}
	}
}

func TestFingerprintMismatchRefused(t *testing.T) {
	t.Parallel()
	a := startNode(t, "a", nil)
	b := startNode(t, "b", func(c *Config) { c.Fingerprint = "fp-2" })

	// b joins a: both sides refuse.
	if n, err := b.Join([]string{a.Addr()}); err == nil || n != 0 {
		t.Fatalf("b.Join(a) = %d, %v; want a refusal", n, err)
	} else if !strings.Contains(err.Error(), "ring settings differ") ||
		!strings.Contains(err.Error(), "fp-1") || !strings.Contains(err.Error(), "fp-2") {
		t.Errorf("b.Join(a) error does not say why: %v", err)
	}
	// a joins b.
	if n, err := a.Join([]string{b.Addr()}); err == nil || n != 0 {
		t.Fatalf("a.Join(b) = %d, %v; want a refusal", n, err)
	} else if !strings.Contains(err.Error(), "ring settings differ") {
		t.Errorf("a.Join(b) error does not say why: %v", err)
	}
	refusedBoth(t, a, b)
	refusedBoth(t, b, a)
	for _, pair := range [][2]*testNode{{a, b}, {b, a}} {
		me, them := pair[0], pair[1]
		lines := me.logs.lines("refused node with different ring settings", "node="+them.Name(),
			"their_fingerprint="+them.cfg.Fingerprint, "our_fingerprint="+me.cfg.Fingerprint)
		if len(lines) != 1 {
			t.Errorf("%s logged %d refusal lines for %s, want 1:\n%s", me.Name(), len(lines), them.Name(), me.logs)
		}
	}
}

// A node with a fingerprint of its own retries its seed in the background
// and stays refused.
func TestFingerprintMismatchSeedRefused(t *testing.T) {
	t.Parallel()
	a := startNode(t, "a", nil)
	b := startNode(t, "b", func(c *Config) { c.Fingerprint = "fp-2"; seeds(a)(c) })
	waitFor(t, 5*time.Second, func() (bool, string) {
		return len(b.logs.lines("cannot join cluster yet", "ring settings differ")) == 1, "b did not log why it cannot join"
	})
	if b.Joined() {
		t.Error("refused node says Joined")
	}
	refusedBoth(t, a, b)
}

func newKey(t *testing.T) []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestEncryptionMismatchRefused(t *testing.T) {
	t.Parallel()
	k1, k2 := newKey(t), newKey(t)
	a := startNode(t, "a", func(c *Config) { c.Keys = [][]byte{k1} })
	if !a.Encrypted() {
		t.Error("Encrypted() = false with a key")
	}
	wrong := startNode(t, "wrong", func(c *Config) { c.Keys = [][]byte{k2} })
	keyless := startNode(t, "keyless", nil)
	if keyless.Encrypted() {
		t.Error("Encrypted() = true without a key")
	}
	cases := []struct {
		from, to *testNode
		want     string
	}{
		{wrong, a, "keys"},
		{keyless, a, "encrypt"},
		{a, keyless, "encrypt"},
	}
	for _, tc := range cases {
		n, err := tc.from.Join([]string{tc.to.Addr()})
		if err == nil || n != 0 {
			t.Errorf("%s joining %s = %d, %v; want an error", tc.from.Name(), tc.to.Name(), n, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s joining %s: error %q does not mention %q", tc.from.Name(), tc.to.Name(), err, tc.want)
		}
		t.Logf("%s joining %s: %v", tc.from.Name(), tc.to.Name(), err)
	}
	refusedBoth(t, a, wrong)
	refusedBoth(t, a, keyless)

	// Rotation: a node that encrypts with a's key and also knows a new one
	// joins.
	rotated := startNode(t, "rotated", func(c *Config) { c.Keys = [][]byte{k1, k2} })
	if _, err := rotated.Join([]string{a.Addr()}); err != nil {
		t.Errorf("node with a's key as secondary could not join: %v", err)
	}
}

func TestLabelMismatchRefused(t *testing.T) {
	t.Parallel()
	a := startNode(t, "a", func(c *Config) { c.Label = "blue" })
	b := startNode(t, "b", func(c *Config) { c.Label = "green" })
	if n, err := b.Join([]string{a.Addr()}); err == nil || n != 0 {
		t.Fatalf("b.Join(a) across labels = %d, %v; want an error", n, err)
	} else {
		t.Logf("join across labels: %v", err)
	}
	if n, err := a.Join([]string{b.Addr()}); err == nil || n != 0 {
		t.Fatalf("a.Join(b) across labels = %d, %v; want an error", n, err)
	}
	refusedBoth(t, a, b)
	refusedBoth(t, b, a)
}

func TestMetaTooLarge(t *testing.T) {
	t.Parallel()
	var insts []string
	for i := range 3000 {
		insts = append(insts, "backend-"+strconv.Itoa(i)+".example.com:8080")
	}
	logger, _ := newTestLogger(t)
	_, err := Start(Config{Name: "big", BindAddr: "127.0.0.1:0", Profile: "fast",
		Services: map[string][]string{"web": insts}, Logger: logger})
	if err == nil {
		t.Fatal("Start with 3,000 long instances succeeded; want a size error")
	}
	if !strings.Contains(err.Error(), "bytes") || !strings.Contains(err.Error(), "65536") {
		t.Errorf("error does not name the sizes: %v", err)
	}
	t.Log(err)
}

func TestRetryJoinSeedStartsLater(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	seed := "127.0.0.1:" + strconv.Itoa(port)
	b := startNode(t, "b", func(c *Config) { c.Seeds = []string{seed} })
	if b.Joined() {
		t.Fatal("Joined() before the seed exists")
	}
	waitFor(t, 5*time.Second, func() (bool, string) {
		return len(b.logs.lines("cannot join cluster yet")) > 0, "b did not try the seed"
	})
	a := startNode(t, "a", func(c *Config) { c.BindAddr = seed })
	start := time.Now()
	waitFor(t, 10*time.Second, func() (bool, string) { return b.Joined(), "b not joined" })
	waitFor(t, 5*time.Second, webIs([]*testNode{a, b}, "a", "b"))
	t.Logf("b joined %v after the seed started", time.Since(start).Round(time.Millisecond))
}

func TestKnownPeersRejoin(t *testing.T) {
	t.Parallel()
	a, b, _ := startThree(t)
	store := &memPeers{}
	d := startNode(t, "d", func(c *Config) { seeds(a)(c); c.Peers = store })
	all := []*testNode{a, b, d}
	waitFor(t, 10*time.Second, statusIs(all, "d", StatusAlive))
	want := []string{a.Addr(), b.Addr()}
	waitFor(t, 5*time.Second, func() (bool, string) {
		got := store.get()
		for _, w := range want {
			if !slices.Contains(got, w) {
				return false, fmt.Sprintf("saved peers %v, want %v among them", got, want)
			}
		}
		return true, ""
	})
	if err := d.Leave(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	_ = d.Shutdown()
	waitFor(t, 5*time.Second, statusIs([]*testNode{a, b}, "d", StatusLeft))

	// Restarted without seeds: the saved peers bring it back.
	d2 := startNode(t, "d", func(c *Config) { c.Peers = store })
	waitFor(t, 10*time.Second, func() (bool, string) { return d2.Joined(), "restarted d not joined" })
	waitFor(t, 10*time.Second, statusIs([]*testNode{a, b, d2}, "d", StatusAlive))
	waitFor(t, 5*time.Second, webIs([]*testNode{a, b, d2}, "a", "b", "c", "d"))

	// With no seeds and nothing saved, a node has nothing to join.
	alone := startNode(t, "alone", func(c *Config) { c.Peers = &memPeers{} })
	if !alone.Joined() {
		t.Error("node with no seeds and no known peers: Joined() = false")
	}
}

func TestOnChangeNeverConcurrent(t *testing.T) {
	t.Parallel()
	var inFlight, maxInFlight, calls atomic.Int32
	var mu sync.Mutex
	var last map[string][]string
	a := startNode(t, "a", func(c *Config) {
		c.OnChange = func(live map[string][]string) {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for {
				m := maxInFlight.Load()
				if n <= m || maxInFlight.CompareAndSwap(m, n) {
					break
				}
			}
			calls.Add(1)
			time.Sleep(2 * time.Millisecond) // widen the window for an overlap
			mu.Lock()
			last = live
			mu.Unlock()
		}
	})
	if calls.Load() != 1 {
		t.Errorf("OnChange called %d times by Start, want 1", calls.Load())
	}
	nodes := []*testNode{a}
	names := []string{"a"}
	var wg sync.WaitGroup
	var startMu sync.Mutex
	for i := range 4 {
		name := fmt.Sprintf("n%d", i)
		names = append(names, name)
		wg.Go(func() {
			n := startNode(t, name, seeds(a))
			startMu.Lock()
			nodes = append(nodes, n)
			startMu.Unlock()
			_ = n.SetDraining(true)
			_ = n.SetDraining(false)
		})
	}
	wg.Wait()
	waitFor(t, 10*time.Second, webIs(nodes, names...))
	waitFor(t, 5*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(last["web"]) == 5, fmt.Sprintf("last OnChange web = %v", last["web"])
	})
	if m := maxInFlight.Load(); m != 1 {
		t.Errorf("OnChange ran %d at once", m)
	}
	t.Logf("%d OnChange calls", calls.Load())
}

// A node that crashed and came back alone (no seeds, no known peers) on its
// old address is found again by the survivors' reconnect loop: memberlist
// alone stops contacting a dead node after a while, and a healed partition
// would stay split.
func TestReconnectHealsSplit(t *testing.T) {
	t.Parallel()
	a := startNode(t, "a", nil)
	b := startNode(t, "b", seeds(a))
	waitFor(t, 5*time.Second, webIs([]*testNode{a, b}, "a", "b"))

	addr := b.Addr()
	b.Shutdown()
	waitFor(t, 5*time.Second, statusIs([]*testNode{a}, "b", StatusFailed))

	b2 := startNode(t, "b", func(c *Config) { c.BindAddr = addr })
	waitFor(t, 10*time.Second, webIs([]*testNode{a, b2}, "a", "b"))
	waitFor(t, 5*time.Second, func() (bool, string) {
		return len(a.logs.lines("reconnected to a failed member", addr)) > 0, "a did not log its reconnect to " + addr
	})
}
