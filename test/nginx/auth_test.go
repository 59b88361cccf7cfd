package nginx

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"ringman/test/cluster"
)

// nginx/auth_request.conf against GET /v1/route: stock nginx, no module.
func TestAuthRequest(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	f := newFixture(t, ctx, "auth_request.conf", 3)
	checkRouting(t, f)

	t.Run("override", func(t *testing.T) {
		const pinned = "pinned.example.test"
		target := f.backends[2]
		if _, err := f.nodes[1].API().SetHost(ctx, pinned, target.Addr); err != nil {
			t.Fatal(err)
		}
		ps := paths("pin", 100)
		err := cluster.Poll(ctx, 20*time.Millisecond, "nginx sends "+pinned+" to "+target.Name, func() (bool, string) {
			got, err := f.fetchAll(pinned, ps)
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
	})

	t.Run("client cannot choose its route", func(t *testing.T) {
		// A client's own X-Ringman-* headers must not reach the subrequest.
		ps := paths("spoof", 30)
		want, err := f.fetchAll(host, ps)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range ps {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+f.nginx.Addr+p, nil)
			req.Host = host
			req.Header.Set("X-Ringman-Key", "pinned.example.test/x")
			req.Header.Set("X-Ringman-Service", "thumbs")
			resp, err := f.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("X-Backend"); resp.StatusCode != 200 || got != want[i] {
				t.Errorf("%s with spoofed headers: %d from %q, want 200 from %s", p, resp.StatusCode, got, want[i])
			}
		}
	})

	t.Run("hostile keys", func(t *testing.T) { checkHostileKeys(t, f, false) })

	t.Run("backend down", func(t *testing.T) {
		ps := paths("down", 30)
		cands, err := f.owners(keysOf(host, ps), 1)
		if err != nil {
			t.Fatal(err)
		}
		dead := f.backends[0]
		dead.Close()
		for i, p := range ps {
			r, err := f.get(host, p)
			if err != nil {
				t.Fatal(err)
			}
			want := http.StatusOK
			if cands[i][0] == dead.Name {
				want = http.StatusBadGateway // one address only: no fail-over here
			}
			if r.Status != want {
				t.Errorf("%s (owner %s, %s down): %+v, want %d", p, cands[i][0], dead.Name, r, want)
			}
		}
	})

	t.Run("no route", func(t *testing.T) {
		for _, n := range f.nodes {
			if _, err := n.API().Drain(ctx, true); err != nil {
				t.Fatal(err)
			}
		}
		if err := cluster.WaitInstances(ctx, f.nodes, nil); err != nil {
			t.Fatal(err)
		}
		r, err := f.get(host, "/no/route")
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != http.StatusNotFound || r.Backend != "" {
			t.Errorf("every node drained: %+v, want nginx's own 404", r)
		}
	})
}

// auth_request.conf's /_ringman timeouts (connect + read), as configured.
const authTimeout = 350 * time.Millisecond

// ringman's API refusing, silent or failing: 503 within the timeouts.
func TestAuthRequestRingmanUnavailable(t *testing.T) {
	nginxBin(t, false)
	closedPort, err := cluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		addr func(t *testing.T) string
	}{
		{"refused", func(*testing.T) string { return fmt.Sprintf("127.0.0.1:%d", closedPort) }},
		{"silent", func(t *testing.T) string {
			return fakeRESP(t, func(c net.Conn) { c.Read(make([]byte, 1)); <-t.Context().Done() })
		}},
		{"500", func(t *testing.T) string {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, `{"error":"boom"}`, http.StatusInternalServerError)
			}))
			t.Cleanup(srv.Close)
			return strings.TrimPrefix(srv.URL, "http://")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t, 30*time.Second)
			ng := startNginx(t, "auth_request.conf", map[string]string{"RINGMAN_HTTP": tc.addr(t)})
			client := &http.Client{Timeout: 10 * time.Second}
			defer client.CloseIdleConnections()
			results := make([]result, 8)
			errs := make([]error, len(results))
			var wg sync.WaitGroup
			for i := range results {
				wg.Go(func() { results[i], errs[i] = get(ctx, client, ng.Addr, host, fmt.Sprintf("/u/%d", i)) })
			}
			wg.Wait()
			var slowest time.Duration
			for i, r := range results {
				if errs[i] != nil {
					t.Fatal(errs[i])
				}
				slowest = max(slowest, r.Took)
				if r.Status != http.StatusServiceUnavailable || r.Took > authTimeout+slack {
					t.Errorf("request %d: status %d after %v, want 503 within %v", i, r.Status, r.Took, authTimeout+slack)
				}
			}
			t.Logf("%d requests answered 503 in at most %v", len(results), slowest)
		})
	}
}
