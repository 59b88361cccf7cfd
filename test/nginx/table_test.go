package nginx

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"ringman/test/cluster"
)

// candidatesLocation adds an endpoint to lua.conf that answers
// require("ringman").candidates(key): the source ("table" or "lookup") on
// the first line, then one candidate per line.
var candidatesLocation = map[string]string{
	"        location / {": `        location = /__candidates {
            content_by_lua_block {
                local list, src = require("ringman").candidates(ngx.unescape_uri(ngx.var.arg_key or ""), { candidates = 3 })
                if not list then
                    ngx.status = 503
                    ngx.say("error ", src)
                    return
                end
                ngx.say(src)
                for _, c in ipairs(list) do ngx.say(c) end
            }
        }

        location / {`,
}

// TestLuaTableMatchesRingman checks the "table" mode's local answers (the
// xxhash64 of the key, the partition row, the override of the key's host,
// wildcards, case, ports, trailing dots) against ringman's RING.LOOKUP for
// thousands of keys, hostile ones included.
func TestLuaTableMatchesRingman(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	nginxBin(t, true)
	f := newFixture(t, ctx, "", 3)
	f.nginx = startEditedNginx(t, "lua.conf", candidatesLocation, map[string]string{"RINGMAN_RESP": f.nodes[0].RESPAddr})

	keys := tableKeys(t, ctx, f)
	rdb := f.nodes[0].Redis()
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	ask := func(key string) (src string, list []string, err error) {
		resp, err := client.Get("http://" + f.nginx.Addr + "/__candidates?key=" + url.QueryEscape(key))
		if err != nil {
			return "", nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", nil, err
		}
		lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
		if resp.StatusCode != http.StatusOK {
			return "", nil, fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
		return lines[0], lines[1:], nil
	}
	var checked int
	err := cluster.Poll(ctx, 50*time.Millisecond, "nginx's table answers every key as ringman does", func() (bool, string) {
		for _, key := range keys[checked:] {
			want, err := rdb.Do(ctx, "RING.LOOKUP", key, 3).StringSlice()
			if err != nil {
				return false, fmt.Sprintf("RING.LOOKUP %q: %v", key, err)
			}
			src, got, err := ask(key)
			if err != nil {
				return false, fmt.Sprintf("key %q: %v", key, err)
			}
			if src != "table" || !slices.Equal(got, want) {
				// The copy may still be one refresh behind the overrides.
				return false, fmt.Sprintf("key %q: nginx answers %q from its %s, ringman %q", key, got, src, want)
			}
			checked++
		}
		return true, ""
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d keys answered from nginx's copy exactly as ringman answers them", checked)
	if f.logContains("looking keys up per request") || f.logContains("[error]") {
		t.Errorf("nginx's error log has errors:\n%s", f.nginx.ErrorLog())
	}
}

// With its copy, nginx keeps routing while ringman is unreachable, for
// max_stale seconds; then it looks keys up per request, which fail: 503.
// When ringman is back, routing resumes by itself.
func TestLuaStaleTable(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	nginxBin(t, true)
	f := newFixture(t, ctx, "", 1)
	// Long enough that the check right after the stop cannot meet a stale
	// copy on a loaded machine.
	const maxStale = 5 * time.Second
	edits := map[string]string{"max_stale = 30,": "max_stale = 5,"}
	maps.Copy(edits, candidatesLocation)
	f.nginx = startEditedNginx(t, "lua.conf", edits, map[string]string{"RINGMAN_RESP": f.nodes[0].RESPAddr})
	want := f.backends[0].Name
	status := func() (int, string) {
		r, err := f.get(host, "/stale/1")
		if err != nil {
			return 0, err.Error()
		}
		return r.Status, r.Backend
	}
	err := cluster.Poll(ctx, 20*time.Millisecond, "nginx routes from its copy of the table", func() (bool, string) {
		resp, err := http.Get("http://" + f.nginx.Addr + "/__candidates?key=x")
		if err != nil {
			return false, err.Error()
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(body), "table\n") {
			return false, fmt.Sprintf("candidates: %q", body)
		}
		code, b := status()
		return code == http.StatusOK && b == want, fmt.Sprintf("status %d from %q, want 200 from %s", code, b, want)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.nodes[0].Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer f.nodes[0].Signal(syscall.SIGCONT)
	stopped := time.Now()
	// Within max_stale: still routed, from the copy.
	if code, b := status(); code != http.StatusOK || b != want {
		t.Fatalf("ringman stopped %v ago: status %d from %q, want 200 from %s (the copy)", time.Since(stopped), code, b, want)
	}
	err = cluster.Poll(ctx, 50*time.Millisecond, "nginx answers 503 once its copy is stale", func() (bool, string) {
		code, b := status()
		return code == http.StatusServiceUnavailable, fmt.Sprintf("status %d from %q", code, b)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The last good poll can be up to a refresh (0.1 s) before the stop,
	// and nginx's clock is cached: allow a second, still far from the
	// refresh interval a wrong bound would show.
	if took := time.Since(stopped); took < maxStale-time.Second {
		t.Errorf("503 after %v, before max_stale (%v)", took, maxStale)
	}
	if !f.logContains("is older than 5 s") {
		t.Errorf("nginx's error log does not say the copy went stale:\n%s", f.nginx.ErrorLog())
	}
	if err := f.nodes[0].Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	err = cluster.Poll(ctx, 50*time.Millisecond, "nginx routes again once ringman answers", func() (bool, string) {
		code, b := status()
		return code == http.StatusOK && b == want, fmt.Sprintf("status %d from %q", code, b)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// tableKeys sets overrides (exact, wildcards of several depths) on a node
// other than nginx's, so gossip must carry them, and returns keys that
// exercise them and the ring: case, ports, trailing dots, wildcards, NUL,
// CRLF, 3 kB keys, and 3,000 plain ones.
func tableKeys(t *testing.T, ctx context.Context, f *fixture) []string {
	t.Helper()
	api := f.nodes[1].API() // set elsewhere than nginx's node: gossip must carry them
	for h, b := range map[string]*backend{"exact.example.com": f.backends[0], "*.example.com": f.backends[1],
		"*.b.example.com": f.backends[2], "plain.org": f.backends[0], "*.deep.x.y.z.org": f.backends[1]} {
		if _, err := api.SetHost(ctx, h, b.Addr); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until nginx's node has every override: before that, nginx and
	// ringman would agree on answers without them, and the keys that need
	// them would be checked for nothing.
	rdb := f.nodes[0].Redis()
	pinned := map[string]*backend{"exact.example.com": f.backends[0], "a.example.com": f.backends[1],
		"a.b.example.com": f.backends[2], "plain.org": f.backends[0], "a.deep.x.y.z.org": f.backends[1]}
	err := cluster.Poll(ctx, 20*time.Millisecond, "the overrides reach nginx's node", func() (bool, string) {
		for h, b := range pinned {
			got, err := rdb.Do(ctx, "RING.LOOKUP", h, 1).StringSlice()
			if err != nil || len(got) != 1 || got[0] != b.Addr {
				return false, fmt.Sprintf("%s: %q %v, want %s", h, got, err, b.Addr)
			}
		}
		return true, ""
	})
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{"", "/", "a", "Exact.Example.COM:8080/x", "exact.example.com./y", "exact.example.com.", "x.y.example.com/z",
		"deep.a.b.example.com", "A.B.EXAMPLE.COM/q", "example.com/q", "/exact.example.com", "plain.org", "plain.org:443",
		"sub.plain.org/x", "q.deep.x.y.z.org/1", "deep.x.y.z.org/1", strings.Repeat("a", 300) + ".example.com/x",
		"host with space.example.com/x", "crlf\r\n.example.com/x", "nul\x00.example.com/x", ".example.com/x",
		"*.example.com/x", "exact.example.com:/x", "ünïcode.example.com/x", "site.test/%00/x", "site.test/" + strings.Repeat("p", 3000)}
	for i := range 1500 {
		keys = append(keys, fmt.Sprintf("h%d.example.org/item/%d", i%17, i), fmt.Sprintf("/item/%d", i))
	}
	return keys
}
