package discovery

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitFor polls cond until it holds or timeout passes, then fails the test
// with what cond last said was missing. It returns how long it waited.
func waitFor(t testing.TB, timeout time.Duration, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("not reached within %v: %s", timeout, why)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logBuffer collects a test's log lines; they are printed if the test fails
// or DISCOVERY_LOGS is set (t.Log cannot be used: memberlist may log after
// the test ends). DISCOVERY_DEBUG=1 adds memberlist's debug lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the log lines containing every one of parts.
func (b *logBuffer) lines(parts ...string) []string {
	var out []string
	for line := range strings.SplitSeq(b.String(), "\n") {
		ok := line != ""
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

func newTestLogger(t testing.TB) (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	level := slog.LevelInfo
	if os.Getenv("DISCOVERY_DEBUG") != "" {
		level = slog.LevelDebug
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("DISCOVERY_LOGS") != "" {
			t.Logf("logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: level})), buf
}

func testTunables() tunables {
	tun := defaultTunables()
	tun.metaTimeout = 2 * time.Second
	tun.peerSaveDelay = 50 * time.Millisecond
	tun.joinBackoffMin = 50 * time.Millisecond
	tun.joinBackoffMax = 500 * time.Millisecond
	tun.reconnectEvery = 100 * time.Millisecond
	return tun
}

type testNode struct {
	*Node
	logs *logBuffer
}

// instanceOf is the one instance a test node advertises for "web".
func instanceOf(name string) string { return name + ".test:80" }

// startNode starts a node named name on 127.0.0.1, port 0, fast profile,
// advertising instanceOf(name) for "web"; edit adjusts the config first.
func startNode(t testing.TB, name string, edit func(*Config)) *testNode {
	t.Helper()
	return startNodeTun(t, name, testTunables(), edit)
}

// startNodeTun is startNode with the given tunables.
func startNodeTun(t testing.TB, name string, tun tunables, edit func(*Config)) *testNode {
	t.Helper()
	logger, logs := newTestLogger(t)
	cfg := Config{
		Name:        name,
		BindAddr:    "127.0.0.1:0",
		Profile:     "fast",
		Fingerprint: "fp-1",
		Version:     "test",
		Services:    map[string][]string{"web": {instanceOf(name)}},
		Logger:      logger.With("self", name),
	}
	if edit != nil {
		edit(&cfg)
	}
	n, err := start(cfg, tun)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { _ = n.Shutdown() })
	return &testNode{Node: n, logs: logs}
}

func seeds(nodes ...*testNode) func(*Config) {
	return func(c *Config) {
		for _, n := range nodes {
			c.Seeds = append(c.Seeds, n.Addr())
		}
	}
}

// statusOf returns how n sees the member called name ("" if unknown).
func statusOf(n *testNode, name string) Status {
	for _, m := range n.Members() {
		if m.Name == name {
			return m.Status
		}
	}
	return ""
}

// webIs reports whether every node's live "web" instances are exactly
// those of names.
func webIs(nodes []*testNode, names ...string) func() (bool, string) {
	want := make([]string, 0, len(names))
	for _, name := range names {
		want = append(want, instanceOf(name))
	}
	slices.Sort(want)
	return func() (bool, string) {
		for _, n := range nodes {
			if got := n.Live()["web"]; !slices.Equal(got, want) {
				return false, fmt.Sprintf("%s: live web = %v, want %v", n.Name(), got, want)
			}
		}
		return true, ""
	}
}

// statusIs reports whether every node in nodes sees name with status want.
func statusIs(nodes []*testNode, name string, want Status) func() (bool, string) {
	return func() (bool, string) {
		for _, n := range nodes {
			if got := statusOf(n, name); got != want {
				return false, fmt.Sprintf("%s sees %s as %q, want %q", n.Name(), name, got, want)
			}
		}
		return true, ""
	}
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}

// memPeers is an in-memory PeerStore.
type memPeers struct {
	mu    sync.Mutex
	addrs []string
	saves int
}

func (s *memPeers) LoadPeers() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.addrs), nil
}

func (s *memPeers) SavePeers(addrs []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addrs = slices.Clone(addrs)
	s.saves++
	return nil
}

func (s *memPeers) get() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.addrs)
}
