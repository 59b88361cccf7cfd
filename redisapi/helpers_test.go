package redisapi

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"ringman/ring"
	"ringman/router"
)

// Test instances: web has three, thumbs one, empty none.
var testInstances = map[string][]string{
	"web":    {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"},
	"thumbs": {"10.0.1.1:8080"},
}

// panicKey makes the test router's hasher panic: the way to reach the
// command-level recovery without a hook in production code.
const panicKey = "panic!"

type panickyHasher struct{}

func (panickyHasher) Sum64(b []byte) uint64 {
	if string(b) == panicKey {
		panic("test hasher asked to panic")
	}
	return xxhash.Sum64(b)
}

func newTestRouter(t testing.TB) *router.Router {
	t.Helper()
	settings := ring.DefaultSettings()
	settings.Partitions = 271 // small rings build fast
	settings.Hasher = panickyHasher{}
	r, err := router.New(settings, "web")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Update(testInstances); err != nil {
		t.Fatal(err)
	}
	return r
}

// testLogger collects log records so tests can assert what was logged.
type testLogger struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *testLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *testLogger) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type testServer struct {
	*Server
	logs *testLogger
}

// startServer listens on a free port (unless cfg.Addr says otherwise),
// serves, and closes at the end of the test, checking that Serve returned nil.
func startServer(t testing.TB, cfg Config) *testServer {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Router == nil {
		cfg.Router = newTestRouter(t)
	}
	logs := &testLogger{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.Version == "" {
		cfg.Version = "1.2.3-test"
	}
	// As serve does: a --db's service is known (a miss, not unknown).
	for _, service := range cfg.DBs {
		cfg.Router.Know(service)
	}
	s, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("engine: %s", engineName(s.eventLoop)) // shown when the test fails
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve returned %v after Close, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return within 5s of Close")
		}
	})
	return &testServer{Server: s, logs: logs}
}

func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	network, address := "tcp", addr
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, address = "unix", path
	}
	c, err := net.DialTimeout(network, address, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange writes req in one write and reads until it has len(want) bytes,
// the connection ends, or 5 s pass. It fails the test unless it read want.
func exchange(t testing.TB, c net.Conn, req, want string) {
	t.Helper()
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatalf("write %q: %v", req, err)
	}
	got, err := readN(c, len(want), 5*time.Second)
	if string(got) != want {
		t.Fatalf("request %q:\n got %q (err %v)\nwant %q", req, got, err, want)
	}
}

func readN(c net.Conn, n int, timeout time.Duration) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, n)
	got, err := io.ReadFull(c, buf)
	return buf[:got], err
}

// readUntilClosed reads everything until the server closes the connection,
// failing the test if that takes longer than timeout. It reports with
// Errorf, not Fatalf, so goroutines may call it.
func readUntilClosed(t testing.TB, c net.Conn, timeout time.Duration) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("connection still open after %v; read so far: %q", timeout, out)
				return out
			}
			return out // EOF or reset: closed
		}
	}
}

// waitFor polls cond until it holds or the deadline passes, then fails
// saying what was not reached.
func waitFor(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not reached within %v: %s", timeout, why)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// bulk encodes s as a RESP bulk string.
func bulk(s string) string {
	return "$" + itoa(len(s)) + "\r\n" + s + "\r\n"
}

// request encodes args as a RESP array, as client libraries send them.
func request(args ...string) string {
	var b strings.Builder
	b.WriteString("*" + itoa(len(args)) + "\r\n")
	for _, a := range args {
		b.WriteString(bulk(a))
	}
	return b.String()
}

func itoa(n int) string { return strconv.Itoa(n) }

// owner is what the test router answers for key on service.
func owner(t testing.TB, r *router.Router, service, key string) string {
	t.Helper()
	backend, src := r.Lookup(service, []byte(key))
	if src == router.Miss {
		t.Fatalf("test router has no owner for %q on %q", key, service)
	}
	return backend
}

// assertNoAllocs fails t if parsing and executing req on c allocates.
func assertNoAllocs(t *testing.T, c *conn, req string) {
	t.Helper()
	in := []byte(req)
	if allocs := testing.AllocsPerRun(1000, func() {
		_, args, err := c.p.parse(in)
		if err != nil {
			t.Fatal(err)
		}
		c.exec(args)
		c.out = c.out[:0]
	}); allocs != 0 {
		t.Errorf("%q: %v allocations", req, allocs)
	}
}
