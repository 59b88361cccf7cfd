package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"ringman/discovery"
	"ringman/hostmap"
	"ringman/ring"
	"ringman/router"
	"ringman/store"
)

// fixture is a real single-node cluster behind the API.
type fixture struct {
	srv    *httptest.Server
	node   *discovery.Node
	router *router.Router
	table  *hostmap.Table // overrides, in a bbolt file of the test's own
	left   atomic.Int32
	ready  atomic.Bool
}

func newFixture(t *testing.T, token string) *fixture {
	t.Helper()
	f := &fixture{}
	rt, err := router.New(ring.DefaultSettings(), "web")
	if err != nil {
		t.Fatal(err)
	}
	f.router = rt
	// thumbs is known but has no live instance, as a --db mapping makes it.
	rt.Know("thumbs")
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	table, err := hostmap.Open(st.DB(), hostmap.Options{Node: "api-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { table.Close() })
	f.table = table
	rt.SetOverrides(table)
	node, err := discovery.Start(discovery.Config{
		Name:        "api-test",
		BindAddr:    "127.0.0.1:0",
		Profile:     "fast",
		Services:    map[string][]string{"web": {"127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"}},
		Fingerprint: ring.DefaultSettings().Fingerprint(),
		OnChange:    func(live map[string][]string) { rt.Update(live) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Shutdown() })
	f.node = node
	f.ready.Store(true)
	f.srv = httptest.NewServer(New(Config{
		Router:    rt,
		Cluster:   node,
		Overrides: table,
		Token:     token,
		Leave:     func() { f.left.Add(1) },
		Ready: func() (bool, string) {
			if !f.ready.Load() {
				return false, "not joined yet"
			}
			return true, ""
		},
	}))
	t.Cleanup(f.srv.Close)
	waitFor(t, 5*time.Second, func() (bool, string) {
		n := rt.Ring("web").Len()
		return n == 3, fmt.Sprintf("web ring has %d instances, want 3", n)
	})
	return f
}

func waitFor(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
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
		time.Sleep(10 * time.Millisecond)
	}
}

func (f *fixture) do(t *testing.T, method, path, body string, header ...string) (int, http.Header, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(raw)
}

func TestIndexListsEveryRoute(t *testing.T) {
	f := newFixture(t, "")
	code, _, body := f.do(t, "GET", "/", "")
	if code != 200 {
		t.Fatalf("GET / = %d", code)
	}
	for _, want := range []string{"POST /entries.json", "GET /entries.json", "GET /entries/{host}.json", "DELETE /entries/{host}.json", "/v1/members", "/v1/lookup", "/v1/rings", "/v1/join", "/v1/leave", "/v1/drain", "/healthz", "/readyz", "/metrics"} {
		if !strings.Contains(body, want) {
			t.Errorf("GET / does not mention %s:\n%s", want, body)
		}
	}
}

func TestLookup(t *testing.T) {
	f := newFixture(t, "")
	want, _ := f.router.Lookup("web", []byte("/a/b"))
	tests := []struct {
		query   string
		code    int
		errPart string
	}{
		{"?key=/a/b", 200, ""},
		{"?key=/a/b&n=3", 200, ""},
		{"?key=/a/b&service=web&n=8", 200, ""},
		{"", 400, "key is required"},
		{"?key=/a/b&n=0", 400, "n must be"},
		{"?key=/a/b&n=x", 400, "n must be"},
		{"?key=/a/b&n=9", 400, "n must be"},
		{"?key=/a/b&n=100", 400, `n must be a whole number from 1 to 8, got "100"`},
		{"?key=/a/b&n=-1", 400, "n must be a whole number from 1 to 8"},
		{"?key=/a/b&service=thumbs", 404, `service "thumbs" has no live instance`},
		{"?key=/a/b&service=nosuch", 404, `unknown service "nosuch"`},
		{"?key=/a/b&service=nosuch&n=3", 404, `unknown service "nosuch"`},
	}
	for _, tt := range tests {
		code, hdr, body := f.do(t, "GET", "/v1/lookup"+tt.query, "")
		if code != tt.code {
			t.Errorf("%s: status %d, want %d (%s)", tt.query, code, tt.code, body)
			continue
		}
		if ct := hdr.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", tt.query, ct)
		}
		if tt.code != 200 {
			var e Error
			if err := json.Unmarshal([]byte(body), &e); err != nil || !strings.Contains(e.Error, tt.errPart) {
				t.Errorf("%s: error body %q, want it to contain %q", tt.query, body, tt.errPart)
			}
			continue
		}
		var l Lookup
		if err := json.Unmarshal([]byte(body), &l); err != nil {
			t.Fatal(err)
		}
		if l.Backend != want || l.Source != "ring" || l.Candidates[0] != want {
			t.Errorf("%s: got %+v, want backend %s from the ring", tt.query, l, want)
		}
	}
	_, _, body := f.do(t, "GET", "/v1/lookup?key=/a/b&n=3", "")
	var l Lookup
	json.Unmarshal([]byte(body), &l)
	if len(l.Candidates) != 3 {
		t.Errorf("n=3: %d candidates, want 3", len(l.Candidates))
	}
}

func TestRingsShares(t *testing.T) {
	f := newFixture(t, "")
	_, _, body := f.do(t, "GET", "/v1/rings", "")
	var rings map[string]Ring
	if err := json.Unmarshal([]byte(body), &rings); err != nil {
		t.Fatal(err)
	}
	web, ok := rings["web"]
	if !ok || len(web.Instances) != 3 || web.Partitions != ring.DefaultPartitions {
		t.Fatalf("rings = %s", body)
	}
	var parts int
	var share float64
	for _, in := range web.Instances {
		parts += in.Partitions
		share += in.Share
	}
	if parts != web.Partitions || math.Abs(share-1) > 1e-9 {
		t.Errorf("partitions sum %d (want %d), shares sum %g (want 1)", parts, web.Partitions, share)
	}
}

func TestTokenGuardsStateChanges(t *testing.T) {
	f := newFixture(t, "s3cret")
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v1/drain", `{"drain":true}`},
		{"POST", "/v1/join", `{"addrs":["127.0.0.1:1"]}`},
		{"POST", "/v1/leave", ""},
	} {
		for _, auth := range []string{"", "Bearer wrong", "s3cret", "Bearer s3cret2"} {
			code, _, body := f.do(t, tc.method, tc.path, tc.body, "Authorization", auth)
			if code != 401 || !strings.Contains(body, "token") {
				t.Errorf("%s %s with Authorization %q: %d %s, want 401", tc.method, tc.path, auth, code, body)
			}
		}
	}
	if f.node.Draining() || f.left.Load() != 0 {
		t.Fatal("an unauthorised request changed state")
	}
	code, _, body := f.do(t, "POST", "/v1/drain", `{"drain":true}`, "Authorization", "Bearer s3cret")
	if code != 200 || !f.node.Draining() {
		t.Fatalf("authorised drain: %d %s, draining=%v", code, body, f.node.Draining())
	}
	// Reads need no token.
	if code, _, _ := f.do(t, "GET", "/v1/members", ""); code != 200 {
		t.Errorf("GET /v1/members without token = %d, want 200", code)
	}
}

func TestDrainAndUndrain(t *testing.T) {
	f := newFixture(t, "")
	code, _, body := f.do(t, "POST", "/v1/drain", "")
	if code != 200 || !strings.Contains(body, `"draining": true`) {
		t.Fatalf("drain with empty body: %d %s", code, body)
	}
	waitFor(t, 5*time.Second, func() (bool, string) {
		return f.router.Ring("web").Len() == 0, "drained node's instances still on the ring"
	})
	code, _, body = f.do(t, "POST", "/v1/drain", `{"drain":false}`)
	if code != 200 || !strings.Contains(body, `"draining": false`) {
		t.Fatalf("undrain: %d %s", code, body)
	}
	waitFor(t, 5*time.Second, func() (bool, string) {
		return f.router.Ring("web").Len() == 3, "undrained instances not back on the ring"
	})
}

func TestBadRequests(t *testing.T) {
	f := newFixture(t, "")
	huge := `{"addrs":["` + strings.Repeat("a", MaxBody) + `"]}`
	tests := []struct {
		name, method, path, body string
		code                     int
	}{
		{"invalid JSON", "POST", "/v1/join", `{"addrs":`, 400},
		{"stray brace", "POST", "/v1/drain", `{"drain":true}}`, 400},
		{"invalid UTF-8", "POST", "/v1/join", "{\"addrs\":[\"a\xff:1\"]}", 400},
		{"unknown field", "POST", "/v1/join", `{"addrs":["a:1"],"x":1}`, 400},
		{"empty body", "POST", "/v1/join", ``, 400},
		{"no addrs", "POST", "/v1/join", `{"addrs":[]}`, 400},
		{"two values", "POST", "/v1/drain", `{"drain":true}{"drain":false}`, 400},
		{"wrong type", "POST", "/v1/drain", `{"drain":"yes"}`, 400},
		{"huge body", "POST", "/v1/join", huge, 413},
		{"unknown route", "GET", "/v2/nothing", "", 404},
		{"wrong method", "DELETE", "/v1/members", "", 405},
		{"unclean path (not redirected, which clients follow)", "POST", "/v1/./drain", "", 400},
		{"double slash", "POST", "//v1/drain", "", 400},
		{"join nobody", "POST", "/v1/join", `{"addrs":["127.0.0.1:1"]}`, 502},
		{"join itself", "POST", "/v1/join", `{"addrs":["` + f.node.Addr() + `"]}`, 400},
	}
	for _, tt := range tests {
		code, hdr, body := f.do(t, tt.method, tt.path, tt.body)
		var e Error
		if code != tt.code || json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
			t.Errorf("%s: %d %q, want %d with a JSON error", tt.name, code, body, tt.code)
		}
		if tt.code == 405 && hdr.Get("Allow") == "" {
			t.Errorf("%s: no Allow header", tt.name)
		}
	}
	if f.node.Draining() {
		t.Error("a bad request drained the node")
	}
}

func TestHealthAndReady(t *testing.T) {
	f := newFixture(t, "")
	if code, _, _ := f.do(t, "GET", "/healthz", ""); code != 200 {
		t.Errorf("healthz = %d", code)
	}
	if code, _, _ := f.do(t, "GET", "/readyz", ""); code != 200 {
		t.Errorf("readyz = %d", code)
	}
	f.ready.Store(false)
	code, _, body := f.do(t, "GET", "/readyz", "")
	if code != 503 || !strings.Contains(body, "not joined yet") {
		t.Errorf("readyz when not ready = %d %s", code, body)
	}
	if code, _, _ := f.do(t, "GET", "/metrics", ""); code != 200 {
		t.Errorf("metrics = %d", code)
	}
}

func TestLeave(t *testing.T) {
	f := newFixture(t, "")
	code, _, _ := f.do(t, "POST", "/v1/leave", "")
	if code != 202 {
		t.Fatalf("leave = %d, want 202", code)
	}
	waitFor(t, 10*time.Second, func() (bool, string) { return f.left.Load() == 1, "Leave not called" })
}

func TestClient(t *testing.T) {
	f := newFixture(t, "tok")
	ctx := context.Background()
	c, err := NewClient(strings.TrimPrefix(f.srv.URL, "http://"), "tok")
	if err != nil {
		t.Fatal(err)
	}
	ms, err := c.Members(ctx)
	if err != nil || len(ms) != 1 || ms[0].Name != "api-test" || ms[0].Status != "alive" {
		t.Fatalf("Members = %+v, %v", ms, err)
	}
	l, err := c.Lookup(ctx, "/x", "", 2)
	if err != nil || len(l.Candidates) != 2 || l.Service != "web" {
		t.Fatalf("Lookup = %+v, %v", l, err)
	}
	if _, err := c.Lookup(ctx, "/x", "none", 1); !IsNotFound(err) {
		t.Fatalf("Lookup on an empty service: %v, want not found", err)
	}
	if on, err := c.Drain(ctx, true); err != nil || !on {
		t.Fatalf("Drain = %v, %v", on, err)
	}
	bad, _ := NewClient(strings.TrimPrefix(f.srv.URL, "http://"), "")
	if _, err := bad.Drain(ctx, false); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("Drain without token: %v", err)
	}
	if _, err := NewClient("ftp://x", ""); err == nil {
		t.Error("NewClient accepted ftp://")
	}
	dead, _ := NewClient("127.0.0.1:1", "")
	if _, err := dead.Members(ctx); err == nil || !strings.Contains(err.Error(), "cannot reach ringman") {
		t.Errorf("unreachable node: %v", err)
	}
}
