package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"ringman/httpapi"
	"ringman/test/cluster"
)

// waitFor bounds every wait of these tests: far more than a node of the
// fast profile needs on an idle machine, for a busy one under -race.
const waitFor = 20 * time.Second

// logBuffer collects a node's log lines, shown when its test fails.
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

// testConfig is a node on loopback with ports the system picks, the fast
// profile and its own data dir.
func testConfig(t *testing.T, name string, logs *logBuffer) Config {
	c := DefaultConfig()
	c.Name = name
	c.Bind = "127.0.0.1:0"
	c.RedisAddr = "127.0.0.1:0"
	c.HTTPAddr = "127.0.0.1:0"
	c.DataDir = filepath.Join(t.TempDir(), "data")
	c.Profile = "fast"
	c.LeaveTimeout = 2 * time.Second
	c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return c
}

// startNode starts a node and shuts it down when the test ends.
func startNode(t *testing.T, c Config) *Node {
	t.Helper()
	n, err := Start(context.Background(), c)
	if err != nil {
		t.Fatalf("start %s: %v", c.Name, err)
	}
	t.Cleanup(func() {
		if err := n.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown %s: %v", c.Name, err)
		}
	})
	return n
}

func waitReady(t *testing.T, n *Node, name string) {
	t.Helper()
	select {
	case <-n.Ready():
	case <-time.After(waitFor):
		t.Fatalf("%s not ready within %v", name, waitFor)
	}
}

func respClient(t *testing.T, n *Node) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: n.RESPAddr(), Protocol: 2, DisableIdentity: true})
	t.Cleanup(func() { c.Close() })
	return c
}

func poll(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := cluster.Poll(ctx, 20*time.Millisecond, what, cond); err != nil {
		t.Fatal(err)
	}
}

// TestNodesInProcess: three nodes in one process, on port 0, join, answer
// the same lookups over RESP and HTTP, and see each other leave (Shutdown)
// and crash (Close).
func TestNodesInProcess(t *testing.T) {
	names := []string{"a", "b", "c"}
	logs := map[string]*logBuffer{}
	for _, name := range names {
		logs[name] = &logBuffer{}
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range names {
				t.Logf("log of %s:\n%s", name, logs[name])
			}
		}
	})
	ca := testConfig(t, "a", logs["a"])
	ca.Services = map[string][]string{"web": {"127.0.0.1:9001"}}
	ca.DBs = map[int]string{1: "thumbs"}
	a := startNode(t, ca)

	cb := testConfig(t, "b", logs["b"])
	cb.Services = map[string][]string{"web": {"127.0.0.1:9002"}}
	cb.Join = []string{a.GossipAddr()}
	b := startNode(t, cb)

	cc := testConfig(t, "c", logs["c"])
	cc.Services = map[string][]string{"thumbs": {"127.0.0.1:9003"}}
	cc.Join = []string{a.GossipAddr()}
	c := startNode(t, cc)

	nodes := map[string]*Node{"a": a, "b": b, "c": c}
	for _, name := range names {
		n := nodes[name]
		waitReady(t, n, name)
		for what, addr := range map[string]string{"gossip": n.GossipAddr(), "RESP": n.RESPAddr(), "HTTP": n.HTTPAddr()} {
			if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" {
				t.Errorf("%s's %s address %q: want the port bound", name, what, addr)
			}
		}
		if _, err := os.Stat(n.DataFile()); err != nil {
			t.Errorf("%s's data file: %v", name, err)
		}
		if count, _ := n.StartKeys(); n.Encrypted() || count != 0 || len(n.Warnings()) != 0 {
			t.Errorf("%s: encrypted %v with %d keys, warnings %q; want neither on loopback without --encrypt", name, n.Encrypted(), count, n.Warnings())
		}
	}

	ctx := context.Background()
	resp := map[string]*redis.Client{}
	api := map[string]*httpapi.Client{}
	for _, name := range names {
		resp[name] = respClient(t, nodes[name])
		hc, err := httpapi.NewClient(nodes[name].HTTPAddr(), "")
		if err != nil {
			t.Fatal(err)
		}
		api[name] = hc
	}
	// Membership spreads by gossip: every node sees every instance, then
	// answers every key the same.
	web := []string{"127.0.0.1:9001", "127.0.0.1:9002"}
	for _, name := range names {
		poll(t, name+" sees both web instances and the thumbs one", func() (bool, string) {
			w, err := resp[name].Do(ctx, "RING.MEMBERS", "web").StringSlice()
			if err != nil || !slices.Equal(w, web) {
				return false, fmt.Sprintf("RING.MEMBERS web = %q, %v", w, err)
			}
			th, err := resp[name].Do(ctx, "RING.MEMBERS", "thumbs").StringSlice()
			if err != nil || !slices.Equal(th, []string{"127.0.0.1:9003"}) {
				return false, fmt.Sprintf("RING.MEMBERS thumbs = %q, %v", th, err)
			}
			return true, ""
		})
	}
	owners := map[string]bool{}
	for i := range 50 {
		key := fmt.Sprintf("example.com/page/%d", i)
		want, err := resp["a"].Get(ctx, key).Result()
		if err != nil || !slices.Contains(web, want) {
			t.Fatalf("a: GET %s = %q, %v; want one of %q", key, want, err, web)
		}
		owners[want] = true
		for _, name := range names {
			if got, err := resp[name].Get(ctx, key).Result(); err != nil || got != want {
				t.Errorf("%s: GET %s = %q, %v; a says %q", name, key, got, err, want)
			}
			l, err := api[name].Lookup(ctx, key, "web", 2)
			if err != nil || l.Backend != want || len(l.Candidates) != 2 || l.Candidates[0] != want {
				t.Errorf("%s: HTTP lookup %s = %+v, %v; want %q first of 2", name, key, l, err, want)
			}
		}
	}
	if len(owners) != 2 {
		t.Errorf("50 keys went to %d instances, want both", len(owners))
	}
	// RESP db 1 is thumbs (a's DBs).
	a1 := redis.NewClient(&redis.Options{Addr: a.RESPAddr(), Protocol: 2, DisableIdentity: true, DB: 1})
	defer a1.Close()
	if got, err := a1.Get(ctx, "any/key").Result(); err != nil || got != "127.0.0.1:9003" {
		t.Errorf("a, db 1: GET = %q, %v; want thumbs' 127.0.0.1:9003", got, err)
	}
	members, err := api["a"].Members(ctx)
	if err != nil || len(members) != 3 {
		t.Fatalf("a's members: %+v, %v; want 3", members, err)
	}

	// A graceful stop takes b's instance out of the others' rings, and
	// closes b's listeners.
	if err := b.Shutdown(ctx); err != nil {
		t.Fatalf("b.Shutdown: %v", err)
	}
	if err := b.Shutdown(ctx); err != nil {
		t.Errorf("second b.Shutdown: %v", err)
	}
	select {
	case <-b.Done():
		if !errors.Is(b.Err(), ErrStopped) {
			t.Errorf("b.Err() = %v, want ErrStopped", b.Err())
		}
	default:
		t.Error("b.Done() open after Shutdown")
	}
	for what, addr := range map[string]string{"RESP": b.RESPAddr(), "HTTP": b.HTTPAddr()} {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			t.Errorf("b's %s listener %s still accepts after Shutdown", what, addr)
		}
	}
	for _, name := range []string{"a", "c"} {
		poll(t, name+" drops b's instance", func() (bool, string) {
			w, err := resp[name].Do(ctx, "RING.MEMBERS", "web").StringSlice()
			return err == nil && slices.Equal(w, web[:1]), fmt.Sprintf("RING.MEMBERS web = %q, %v", w, err)
		})
	}

	// A crash (Close: no leave) is detected as one.
	if err := c.Close(); err != nil {
		t.Fatalf("c.Close: %v", err)
	}
	poll(t, "a drops crashed c's instance", func() (bool, string) {
		th, err := resp["a"].Do(ctx, "RING.MEMBERS", "thumbs").StringSlice()
		return err == nil && len(th) == 0, fmt.Sprintf("RING.MEMBERS thumbs = %q, %v", th, err)
	})
	if got, err := a1.Get(ctx, "any/key").Result(); err != redis.Nil {
		t.Errorf("a, db 1 with no thumbs instance: GET = %q, %v; want nil", got, err)
	}
}

// TestLeaveThroughAPI: POST /v1/leave asks the node's owner to stop it.
func TestLeaveThroughAPI(t *testing.T) {
	logs := &logBuffer{}
	n := startNode(t, testConfig(t, "alone", logs))
	waitReady(t, n, "alone")
	hc, err := httpapi.NewClient(n.HTTPAddr(), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := hc.Leave(context.Background()); err != nil {
		t.Fatalf("leave: %v", err)
	}
	select {
	case <-n.Done():
	case <-time.After(waitFor):
		t.Fatalf("Done not closed within %v of a leave through the API\n%s", waitFor, logs)
	}
	if !errors.Is(n.Err(), ErrLeaveRequested) {
		t.Errorf("Err() = %v, want ErrLeaveRequested", n.Err())
	}
}

// TestStartRefusesBadConfig: a mistake is a *ConfigError of one line, and
// nothing is created, the data dir included.
func TestStartRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Name = "" }, "--name is empty"},
		{func(c *Config) { c.Name = "evil\nname" }, "--name"},
		{func(c *Config) { c.DefaultService = "" }, "--default-service"},
		{func(c *Config) { c.Services = map[string][]string{"web": {"10.0.0.1"}} }, `--service "web=10.0.0.1"`},
		{func(c *Config) { c.Services = map[string][]string{"bad name": {"10.0.0.1:80"}} }, "--service"},
		{func(c *Config) { c.DBs = map[int]string{-1: "thumbs"} }, `--db "-1=thumbs": want N=SERVICE`},
		{func(c *Config) { c.Bind = "127.0.0.1" }, "--bind 127.0.0.1: want host:port"},
		{func(c *Config) { c.Advertise = "0.0.0.0:7946" }, "--advertise"},
		{func(c *Config) { c.Join = []string{"10.0.0.1"} }, "--join 10.0.0.1: no port"},
		{func(c *Config) { c.RedisAddr = "unix:" }, "--redis-addr"},
		{func(c *Config) { c.HTTPAddr = "unix:/tmp/x.sock" }, "--http-addr"},
		{func(c *Config) { c.Check = "ftp://x/" }, "--check"},
		{func(c *Config) { c.Profile = "quick" }, "--profile quick: want lan, wan or fast"},
		{func(c *Config) { c.Profile = "" }, `--profile "": want lan, wan or fast`},
		{func(c *Config) { c.EncryptKey = []byte("short") }, "--encrypt: key is 5 bytes"},
		{func(c *Config) { c.SocketMode = 0o1777 }, "--socket-mode"},
		{func(c *Config) { c.MaxClients = -1 }, "--max-clients"},
		{func(c *Config) { c.Ring.Partitions = 0 }, "partitions"},
		{func(c *Config) { c.LeaveTimeout = 0 }, "--leave-timeout must be positive"},
		{func(c *Config) { c.CheckInterval = 0 }, "--check-interval must be positive"},
		{func(c *Config) { c.CheckFall = 0 }, "--check-fall must be 1 to 100 probes in a row, got 0"},
		{func(c *Config) { c.CheckRise = 101 }, "--check-rise must be 1 to 100"},
		{func(c *Config) { c.CheckStatus = "2xx" }, "--check-status 2xx: want a status or a range"},
		{func(c *Config) { c.CheckStatus = "399-200" }, "--check-status 399-200"},
	} {
		c := testConfig(t, "n", &logBuffer{})
		tc.edit(&c)
		verr := c.Validate()
		n, err := Start(context.Background(), c)
		var ce *ConfigError
		if n != nil || !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Start with %q: %v, %v; want a one-line *ConfigError with %q", tc.want, n, err, tc.want)
		}
		if verr == nil || verr.Error() != fmt.Sprint(err) {
			t.Errorf("Validate with %q: %v; Start said %v", tc.want, verr, err)
		}
		if _, err := os.Stat(c.DataDir); err == nil {
			t.Errorf("Start with %q created the data dir", tc.want)
		}
	}
	if err := testConfig(t, "n", &logBuffer{}).Validate(); err != nil {
		t.Errorf("a good Config: %v", err)
	}
}

// TestStartFailureLeavesNothingOpen: when a listener cannot be had, Start
// fails with which, and closes what it opened: the data file can be
// opened again at once.
func TestStartFailureLeavesNothingOpen(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	logs := &logBuffer{}
	c := testConfig(t, "n", logs)
	c.HTTPAddr = taken.Addr().String()
	n, err := Start(context.Background(), c)
	var ce *ConfigError
	if n != nil || err == nil || !strings.HasPrefix(err.Error(), "start HTTP API: ") || errors.As(err, &ce) {
		t.Fatalf("Start on a taken HTTP port: %v, %v; want a start HTTP API error that is not a ConfigError", n, err)
	}
	c.HTTPAddr = "127.0.0.1:0"
	n = startNode(t, c)
	waitReady(t, n, "n")
}

// TestManyServicesEndToEnd: a node advertising 200 services of two
// instances each (far past memberlist's 512 bytes of metadata) joins a
// router node, whose rings then hold every instance of every service.
func TestManyServicesEndToEnd(t *testing.T) {
	logs := map[string]*logBuffer{"router": {}, "big": {}}
	t.Cleanup(func() {
		if t.Failed() {
			for name, l := range logs {
				t.Logf("log of %s:\n%s", name, l)
			}
		}
	})
	router := startNode(t, testConfig(t, "router", logs["router"]))
	cb := testConfig(t, "big", logs["big"])
	cb.Services = map[string][]string{}
	for i := range 200 {
		name := fmt.Sprintf("svc-%03d", i)
		cb.Services[name] = []string{fmt.Sprintf("10.1.%d.1:8080", i), fmt.Sprintf("10.1.%d.2:8080", i)}
	}
	cb.Join = []string{router.GossipAddr()}
	big := startNode(t, cb)
	waitReady(t, router, "router")
	waitReady(t, big, "big")

	ctx := context.Background()
	resp := respClient(t, router)
	poll(t, "router has a ring of each of big's 200 services", func() (bool, string) {
		for name, want := range cb.Services {
			got, err := resp.Do(ctx, "RING.MEMBERS", name).StringSlice()
			if err != nil || !slices.Equal(got, want) {
				return false, fmt.Sprintf("RING.MEMBERS %s = %q, %v; want %q", name, got, err, want)
			}
		}
		return true, ""
	})
}
