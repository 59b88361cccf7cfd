package nginx

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ringman/test/cluster"
)

const host = "site.test" // Host of the tests' requests; keys are host+uri

func keysOf(host string, paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = host + p
	}
	return out
}

// Routing through nginx/lua.conf follows ringman exactly: the same URL
// reaches the same backend every time, and 3,000 URLs reach all three
// backends, each the owner ringman names, none above the load bound.
func TestLuaRouting(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	f := newFixture(t, ctx, "lua.conf", 3)
	checkRouting(t, f)
}

func checkRouting(t *testing.T, f *fixture) {
	t.Run("same URL same backend", func(t *testing.T) {
		ps := paths("same", 50)
		first, err := f.fetchAll(host, ps)
		if err != nil {
			t.Fatal(err)
		}
		for round := 2; round <= 4; round++ {
			again, err := f.fetchAll(host, ps)
			if err != nil {
				t.Fatal(err)
			}
			for i := range ps {
				if again[i] != first[i] {
					t.Errorf("round %d: %s reached %s, first %s", round, ps[i], again[i], first[i])
				}
			}
		}
	})
	t.Run("3000 URLs within the load bound", func(t *testing.T) {
		const count = 3000
		ps := paths("spread", count)
		got, err := f.fetchAll(host, ps)
		if err != nil {
			t.Fatal(err)
		}
		want, err := f.nodes[0].Lookups(f.ctx, keysOf(host, ps))
		if err != nil {
			t.Fatal(err)
		}
		perBackend := map[string]int{}
		for i := range ps {
			if b := f.byAddr[want[i]]; b == nil || b.Name != got[i] {
				t.Fatalf("%s%s reached %s; ringman's owner is %s", host, ps[i], got[i], want[i])
			}
			perBackend[got[i]]++
		}
		// The ring caps each instance at 1.25x its share of partitions
		// (its weight over the total); 3,000 keys sample those shares, so
		// allow 4 standard deviations of a binomial count at the largest
		// allowed share (p = 1.25 x share): a false failure is a < 1/10,000
		// event.
		total := 0.0
		for _, b := range f.backends {
			total += f.weights[b.Name]
		}
		for _, b := range f.backends {
			share := f.weights[b.Name] / total
			p := 1.25 * share
			bound := 1.25*count*share + 4*math.Sqrt(count*p*(1-p))
			n := perBackend[b.Name]
			if n == 0 {
				t.Errorf("%s got no request of %d: %v", b.Name, count, perBackend)
			}
			if float64(n) > bound {
				t.Errorf("%s (weight %g) got %d requests, above the bound %.0f (1.25x %.0f + 4 sd): %v", b.Name, f.weights[b.Name], n, bound, count*share, perBackend)
			}
		}
		t.Logf("requests per backend: %v (weights %v)", perBackend, f.weights)
	})
}

// ringOwners returns ringman's owner (as a backend name) of every path with
// Host host, as the first node answers GET.
func (f *fixture) ringOwners(host string, ps []string) ([]string, error) {
	addrs, err := f.nodes[0].Lookups(f.ctx, keysOf(host, ps))
	if err != nil {
		return nil, err
	}
	out := make([]string, len(addrs))
	for i, a := range addrs {
		if b := f.byAddr[a]; b != nil {
			out[i] = b.Name
		} else {
			out[i] = "?" + a
		}
	}
	return out, nil
}

// settled returns nginx's answers for every path with Host host and ringman's
// owners once they agree: nginx's workers answer from a copy of ringman's
// table that may be one refresh (0.1 s) behind a change.
func (f *fixture) settled(ctx context.Context, host string, ps []string) (viaNginx, ring []string, err error) {
	err = cluster.Poll(ctx, 20*time.Millisecond, "nginx follows ringman's ring", func() (bool, string) {
		if viaNginx, err = f.fetchAll(host, ps); err != nil {
			return false, err.Error()
		}
		if ring, err = f.ringOwners(host, ps); err != nil {
			return false, err.Error()
		}
		for i := range ps {
			if viaNginx[i] != ring[i] {
				return false, fmt.Sprintf("%s reached %s; ringman's owner is %s", ps[i], viaNginx[i], ring[i])
			}
		}
		return true, ""
	})
	return viaNginx, ring, err
}

// moved compares two rounds of answers through nginx with ringman's owners
// at the same moments: nginx must follow ringman exactly, every URL that was
// on gone must have moved, and nginx must move no URL that ringman did not.
//
// With three instances the load bound stays out of play (ring.Default-
// ReplicationFactor; 0 of 10,000 random 3-instance rings losing one moved
// another key), so no URL may move between live backends.
func moved(t *testing.T, ps, before, after, ringBefore, ringAfter []string, gone string) {
	t.Helper()
	for i := range ps {
		if before[i] != ringBefore[i] {
			t.Fatalf("before: %s reached %s; ringman's owner was %s", ps[i], before[i], ringBefore[i])
		}
		if after[i] != ringAfter[i] {
			t.Fatalf("after: %s reached %s; ringman's owner is %s", ps[i], after[i], ringAfter[i])
		}
	}
	var movedGone, movedOther int
	for i := range ps {
		switch {
		case before[i] == gone && after[i] == gone:
			t.Errorf("%s still reached %s", ps[i], gone)
		case before[i] == gone:
			movedGone++
		case after[i] != before[i]:
			movedOther++
		}
	}
	if movedGone == 0 {
		t.Errorf("no URL was on %s before: %v", gone, before)
	}
	if movedOther > 0 {
		t.Errorf("%d of %d URLs moved between live backends; only %s's should move", movedOther, len(ps), gone)
	}
	t.Logf("%d of %d URLs moved off %s, and no other", movedGone, len(ps), gone)
}

// kill -9 of one ringman node: its instance leaves every ring, its URLs move
// to the others and no other URL moves.
func TestLuaNodeKilled(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	f := newFixture(t, ctx, "lua.conf", 3)
	checkNodeKilled(t, ctx, f)
}

func checkNodeKilled(t *testing.T, ctx context.Context, f *fixture) {
	ps := paths("kill", 600)
	before, err := f.fetchAll(host, ps)
	if err != nil {
		t.Fatal(err)
	}
	ringBefore, err := f.ringOwners(host, ps)
	if err != nil {
		t.Fatal(err)
	}
	victim := f.backends[2]
	if err := f.nodes[2].Kill(); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitInstances(ctx, f.nodes[:2], f.instances(victim)); err != nil {
		t.Fatal(err)
	}
	after, ringAfter, err := f.settled(ctx, host, ps)
	if err != nil {
		t.Fatal(err)
	}
	moved(t, ps, before, after, ringBefore, ringAfter, victim.Name)
}

// hammer sends GET for ps in a loop until stop is closed, and counts
// answers that are not a backend's 200.
func (f *fixture) hammer(host string, ps []string, stop chan struct{}) (wait func() (ok, bad int64, firstBad string)) {
	var okN, badN atomic.Int64
	var mu sync.Mutex
	var first string
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; ; i = (i + 4) % len(ps) {
				select {
				case <-stop:
					return
				default:
				}
				r, err := f.get(host, ps[i])
				if err == nil && r.Status == http.StatusOK && r.Backend != "" {
					okN.Add(1)
					continue
				}
				badN.Add(1)
				mu.Lock()
				if first == "" {
					first = fmt.Sprintf("%s: %+v %v", ps[i], r, err)
				}
				mu.Unlock()
			}
		})
	}
	return func() (int64, int64, string) {
		wg.Wait()
		return okN.Load(), badN.Load(), first
	}
}

// Draining a node moves its URLs to the others, moves no other URL, and no
// client sees an error meanwhile. Draining every node leaves no route: 404.
func TestLuaDrain(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	f := newFixture(t, ctx, "lua.conf", 3)
	checkDrain(t, ctx, f)
}

func checkDrain(t *testing.T, ctx context.Context, f *fixture) {
	ps := paths("drain", 600)
	before, err := f.fetchAll(host, ps)
	if err != nil {
		t.Fatal(err)
	}
	ringBefore, err := f.ringOwners(host, ps)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	wait := f.hammer(host, ps, stop)
	victim := f.backends[2]
	if _, err := f.nodes[2].API().Drain(ctx, true); err != nil {
		close(stop)
		wait()
		t.Fatal(err)
	}
	err = cluster.WaitInstances(ctx, f.nodes, f.instances(victim))
	after, ringAfter, ferr := f.settled(ctx, host, ps)
	close(stop)
	okN, badN, firstBad := wait()
	if err != nil {
		t.Fatal(err)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
	if badN > 0 {
		t.Errorf("%d of %d requests during the drain failed; first: %s", badN, okN+badN, firstBad)
	}
	t.Logf("%d requests during the drain, all answered by a backend", okN)
	moved(t, ps, before, after, ringBefore, ringAfter, victim.Name)

	for _, n := range f.nodes[:2] {
		if _, err := n.API().Drain(ctx, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := cluster.WaitInstances(ctx, f.nodes, nil); err != nil {
		t.Fatal(err)
	}
	err = cluster.Poll(ctx, 20*time.Millisecond, "nginx answers 404 with every node drained", func() (bool, string) {
		r, err := f.get(host, "/no/route")
		if err != nil {
			return false, err.Error()
		}
		return r.Status == http.StatusNotFound && r.Backend == "", fmt.Sprintf("got %+v, want nginx's own 404", r)
	})
	if err != nil {
		t.Error(err)
	}
}

// An override for a host sends all of that host's requests to its backend,
// and no other host's.
func TestLuaOverride(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	f := newFixture(t, ctx, "lua.conf", 3)
	checkOverride(t, ctx, f, "candidate app.invalid:8080 is a hostname")
}

// checkOverride checks overrides through f's nginx; hostnameLog is what
// its error log says about a backend given as a hostname.
func checkOverride(t *testing.T, ctx context.Context, f *fixture, hostnameLog string) {
	const pinned = "pinned.example.test"
	target := f.backends[1]
	ps := paths("pin", 200)
	others, err := f.fetchAll(host, ps)
	if err != nil {
		t.Fatal(err)
	}
	// Set on another node than nginx's: the override must reach it by gossip.
	if _, err := f.nodes[2].API().SetHost(ctx, pinned, target.Addr); err != nil {
		t.Fatal(err)
	}
	err = cluster.Poll(ctx, 20*time.Millisecond, "nginx sends "+pinned+" to "+target.Name, func() (bool, string) {
		got, err := f.fetchAll(pinned, ps[:20])
		if err != nil {
			return false, err.Error()
		}
		for i, b := range got {
			if b != target.Name {
				return false, fmt.Sprintf("%s reached %s", ps[i], b)
			}
		}
		return true, ""
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.fetchAll(pinned, ps)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range got {
		if b != target.Name {
			t.Errorf("Host %s %s reached %s, want the override's %s", pinned, ps[i], b, target.Name)
		}
	}
	again, err := f.fetchAll(host, ps)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again, others) {
		t.Errorf("the override of %s changed where Host %s goes", pinned, host)
	}

	// A backend given as a hostname is rejected (balancer_by_lua takes IP
	// literals only): 502 and one clear error line.
	const named = "named.example.test"
	if _, err := f.nodes[0].API().SetHost(ctx, named, "app.invalid:8080"); err != nil {
		t.Fatal(err)
	}
	err = cluster.Poll(ctx, 20*time.Millisecond, "nginx answers 502 for an override to a hostname", func() (bool, string) {
		r, err := f.get(named, "/x")
		if err != nil {
			return false, err.Error()
		}
		return r.Status == http.StatusBadGateway && r.Backend == "", fmt.Sprintf("got %+v, want nginx's 502", r)
	})
	if err != nil {
		t.Error(err)
	}
	if !f.logContains(hostnameLog) {
		t.Errorf("nginx's error log does not say why:\n%s", f.nginx.ErrorLog())
	}
}

// A backend that dies while its ringman node lives: ringman still names it
// first, nginx's connect is refused, and the request is served by the next
// candidate (RING.LOOKUP's second), without a client error.
func TestLuaBackendDown(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	f := newFixture(t, ctx, "lua.conf", 3)
	checkBackendDown(t, f)
}

func checkBackendDown(t *testing.T, f *fixture) {
	ps := paths("down", 300)
	cands, err := f.owners(keysOf(host, ps), 3)
	if err != nil {
		t.Fatal(err)
	}
	dead := f.backends[1]
	dead.Close()
	got, err := f.fetchAll(host, ps)
	if err != nil {
		t.Fatal(err)
	}
	failedOver := 0
	for i, c := range cands {
		want := c[0]
		if want == dead.Name {
			want = c[1]
			failedOver++
		}
		if got[i] != want {
			t.Errorf("%s reached %s, want %s (candidates %v, %s down)", ps[i], got[i], want, c, dead.Name)
		}
	}
	if failedOver == 0 {
		t.Fatalf("no URL was owned by %s", dead.Name)
	}
	t.Logf("%d of %d URLs failed over from %s to their second candidate", failedOver, len(ps), dead.Name)

	// Every backend down: the tries run out and nginx answers 502.
	for _, b := range f.backends {
		b.Close()
	}
	r, err := f.get(host, ps[0])
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusBadGateway {
		t.Errorf("every backend down: %+v, want 502", r)
	}
}

// fakeRESP listens on a free port and treats every connection with serve.
func fakeRESP(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { serve(c) })
		}
	})
	return ln.Addr().String()
}

// read_timeout + connect_timeout in lua.conf, and what a busy machine adds:
// seconds, still far below nginx's own 60 s defaults and the client's 10 s.
const (
	luaTimeout = 350 * time.Millisecond
	slack      = 5 * time.Second
)

// Ringman refusing connections, accepting and never answering, or answering
// errors: nginx answers 503 within the configured timeouts.
func TestLuaRingmanUnavailable(t *testing.T) {
	nginxBin(t, true)
	closedPort, err := cluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		addr func(t *testing.T) string
		why  string
	}{
		{"refused", func(*testing.T) string { return fmt.Sprintf("127.0.0.1:%d", closedPort) }, "connect"},
		{"silent", func(t *testing.T) string {
			return fakeRESP(t, func(c net.Conn) { bufio.NewReader(c).WriteTo(discard{}) })
		}, "timeout"},
		{"error reply", func(t *testing.T) string {
			return fakeRESP(t, func(c net.Conn) {
				rd := bufio.NewReader(c)
				for {
					line, err := rd.ReadString('\n')
					if err != nil {
						return
					}
					if strings.HasPrefix(line, "*") { // one reply per command
						c.Write([]byte("-ERR boom\r\n"))
					}
				}
			})
		}, "ringman error: ERR boom"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t, 30*time.Second)
			ng := startNginx(t, "lua.conf", map[string]string{"RINGMAN_RESP": tc.addr(t)})
			client := &http.Client{Timeout: 10 * time.Second}
			defer client.CloseIdleConnections()
			var wg sync.WaitGroup
			results := make([]result, 8)
			errs := make([]error, len(results))
			for i := range results {
				wg.Go(func() { results[i], errs[i] = get(ctx, client, ng.Addr, host, fmt.Sprintf("/u/%d", i)) })
			}
			wg.Wait()
			var slowest time.Duration
			for i, r := range results {
				slowest = max(slowest, r.Took)
				if errs[i] != nil {
					t.Fatal(errs[i])
				}
				if r.Status != http.StatusServiceUnavailable || r.Took > luaTimeout+slack {
					t.Errorf("request %d: status %d after %v, want 503 within %v", i, r.Status, r.Took, luaTimeout+slack)
				}
			}
			t.Logf("%d requests answered 503 in at most %v", len(results), slowest)
			if log := ng.ErrorLog(); !strings.Contains(log, "ringman: lookup failed") || !strings.Contains(log, tc.why) {
				t.Errorf("error log does not say why (%q):\n%s", tc.why, log)
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Hostile URLs neither break the lookup nor reach a backend as another
// request: the key (decoded $uri) goes to ringman as data, the backend gets
// exactly the URI the client sent, and nothing else.
func TestLuaHostileKeys(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	f := newFixture(t, ctx, "lua.conf", 3)
	checkHostileKeys(t, f, true)
}

// checkHostileKeys sends hostile URIs; decodedKey says whether the config's
// key holds the decoded path ($uri) or the path as sent.
func checkHostileKeys(t *testing.T, f *fixture, decodedKey bool) {
	for _, b := range f.backends {
		b.Reset()
	}
	smuggle := "/a%0D%0AX-Injected:%201%0D%0A%0D%0AGET%20/smuggled%20HTTP/1.1%0D%0AHost:%20x%0D%0A%0D%0A"
	cases := []struct {
		name, uri string
	}{
		{"long", "/long/" + strings.Repeat("a", 6000)},
		{"spaces", "/with%20spaces/a%20b"},
		{"crlf", smuggle},
		{"resp in key", "/x%0D%0A*1%0D%0A$4%0D%0AQUIT%0D%0A"},
		{"nul", "/nul%00byte"},
		{"utf8 and quotes", "/%C3%A9t%C3%A9/%22%27%3C%3E"},
	}
	sent := map[string]bool{}
	served := 0
	for _, tc := range cases {
		r, err := f.get(host, tc.uri)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		switch {
		case r.Status == http.StatusOK && r.Backend != "":
			served++
			sent[tc.uri] = true
			path, err := url.PathUnescape(tc.uri)
			if err != nil {
				t.Fatal(err)
			}
			key := host + path
			if !decodedKey {
				key = host + tc.uri
			}
			want, err := f.owners([]string{key}, 1)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if r.Backend != want[0][0] {
				t.Errorf("%s: reached %s, ringman's owner of the key is %s", tc.name, r.Backend, want[0][0])
			}
		case tc.name == "nul" && r.Status == http.StatusBadRequest && r.Backend == "":
			// nginx refuses a NUL in the URI itself; fine, as long as it stays refused.
			t.Logf("%s: nginx refused the URI with 400", tc.name)
		default:
			t.Errorf("%s: %+v, want a backend's 200", tc.name, r)
		}
	}
	// Far past nginx's header buffers: nginx refuses it, nothing breaks.
	r, err := f.get(host, "/huge/"+strings.Repeat("b", 100_000))
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusRequestURITooLong && r.Status != http.StatusBadRequest {
		t.Errorf("100 kB URI: %+v, want 414 or 400 from nginx", r)
	}
	if r, err := f.get(host, "/after/hostile"); err != nil || r.Status != http.StatusOK {
		t.Errorf("a plain request after the hostile ones: %+v %v", r, err)
	}
	sent["/after/hostile"] = true
	total := 0
	for _, b := range f.backends {
		for _, u := range b.URIs() {
			total++
			if !sent[u] {
				t.Errorf("%s received %q, which no client sent", b.Name, u)
			}
		}
	}
	if total != served+1 {
		t.Errorf("backends received %d requests, clients had %d served", total, served+1)
	}
	for _, n := range f.nodes {
		if err := n.Redis().Ping(f.ctx).Err(); err != nil || !n.Running() {
			t.Errorf("%s after the hostile keys: %v (%s)", n.Name, err, n.ExitState())
		}
	}
}

// lua.conf reaches ringman over a unix socket (--redis-addr unix:/path).
func TestLuaUnixSocket(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	nginxBin(t, true)
	if buildErr != nil {
		t.Fatalf("cannot build the ringman binary: %v", buildErr)
	}
	dir, err := os.MkdirTemp("", "rm-sock-") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Run as root, nginx's workers run as nobody: they need to reach the
	// socket. In production give them ringman's group (--socket-mode 0660).
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "ringman.sock")
	c := cluster.New(bin, t.TempDir())
	t.Cleanup(func() {
		c.Kill()
		if t.Failed() {
			t.Logf("ringman logs:\n%s", c.Logs())
		}
	})
	b := startBackend(t, "b1")
	n, err := c.Start(ctx, cluster.NodeConfig{Name: "n1", Services: []string{"web=" + b.Addr}, Args: []string{"--redis-addr", "unix:" + sock, "--socket-mode", "0666"}})
	if err != nil {
		t.Fatal(err)
	}
	err = cluster.Poll(ctx, 20*time.Millisecond, "n1 routes to "+b.Addr, func() (bool, string) {
		l, err := n.API().Lookup(ctx, "/x", "", 1)
		if err != nil {
			return false, err.Error()
		}
		return l.Backend == b.Addr, l.Backend
	})
	if err != nil {
		t.Fatal(err)
	}
	ng := startNginx(t, "lua.conf", map[string]string{"RINGMAN_RESP": "unix:" + sock})
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	for i := range 20 { // more requests than one connection: the pool is used
		r, err := get(ctx, client, ng.Addr, host, fmt.Sprintf("/sock/%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != http.StatusOK || r.Backend != "b1" {
			t.Fatalf("through unix:%s: %+v, want b1's 200", sock, r)
		}
	}
}

// lua.conf has two paths: pick() answers from the worker's copy of the
// table in the balancer alone (upstream ringman_backend), and what it
// cannot answer goes through error_page to @ringman, where route() looks the
// key up and balance() tries the candidates (upstream ringman_routed). Mode
// "lookup" sends every request the slow way. Both reach ringman's owner with
// the method and the body the client sent.
func TestLuaFastAndSlowPaths(t *testing.T) {
	for _, tc := range []struct{ mode, upstream string }{{"table", "ringman_backend"}, {"lookup", "ringman_routed"}} {
		t.Run(tc.mode, func(t *testing.T) {
			ctx := testContext(t, 60*time.Second)
			nginxBin(t, true)
			f := newFixture(t, ctx, "", 3)
			f.nginx = startEditedNginx(t, "lua.conf", map[string]string{
				"        location / {": "        add_header X-Ringman-Upstream $proxy_host always;\n\n        location / {",
				`mode = "table",`:      fmt.Sprintf("mode = %q,", tc.mode),
			}, map[string]string{"RINGMAN_RESP": f.nodes[0].RESPAddr})
			post := func(path, body string) (*http.Response, error) {
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+f.nginx.Addr+path, strings.NewReader(body))
				if err != nil {
					return nil, err
				}
				req.Host = host
				resp, err := f.client.Do(req)
				if err != nil {
					return nil, err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp, nil
			}
			// The worker fetches its first table just after it starts.
			err := cluster.Poll(ctx, 20*time.Millisecond, "a request on the "+tc.upstream+" path", func() (bool, string) {
				resp, err := post("/warmup", "")
				if err != nil {
					return false, err.Error()
				}
				got := resp.Header.Get("X-Ringman-Upstream")
				return got == tc.upstream, "last went through " + got
			})
			if err != nil {
				t.Fatal(err)
			}
			ps := paths("paths-"+tc.mode, 60)
			owners, err := f.ringOwners(host, ps)
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range ps {
				body := fmt.Sprintf("payload %d\r\nof %s", i, p)
				resp, err := post(p, body)
				if err != nil {
					t.Fatal(err)
				}
				got := fmt.Sprintf("%d %s %s %s", resp.StatusCode, resp.Header.Get("X-Ringman-Upstream"),
					resp.Header.Get("X-Backend"), resp.Header.Get("X-Echo"))
				want := fmt.Sprintf("200 %s %s POST %q", tc.upstream, owners[i], body)
				if got != want {
					t.Fatalf("POST %s: got %s, want %s", p, got, want)
				}
			}
			if f.logContains("[error]") {
				t.Errorf("nginx's error log has errors:\n%s", f.nginx.ErrorLog())
			}
		})
	}
}
