package nginx

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"ringman/router"
	"ringman/tablefile"
	"ringman/test/cluster"
	"ringman/test/nginxrun"
)

// The native module's tests: nginx/module.conf and static_then_ring.conf
// with bin/ngx_http_ringman_module.so (`make nginx-module`), against real
// nodes started with --table-dir; nginx reads the first node's directory.

// moduleSO returns the built module ($RINGMAN_NGINX_MODULE, else
// bin/ngx_http_ringman_module.so), or skips saying how to build it.
func moduleSO(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(nginxrun.EnvModule); p != "" {
		return p
	}
	root, err := cluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, "bin", "ngx_http_ringman_module.so")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("the native nginx module is not built (%s is missing): run `make nginx-module`", p)
	}
	return p
}

// worldDir returns a new directory that nginx's workers can read: run as
// root, they run as nobody, and t.TempDir()'s directories are 0700.
func worldDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// moduleFixture is a fixture whose nodes write table files, and the
// directory of each.
type moduleFixture struct {
	*fixture
	tables []string
}

// newModuleFixture starts nodes ringman nodes with --table-dir and nginx
// with conf (edited by edit, which may be nil) reading the first node's
// tables, and waits until nginx answers from a table with every instance.
func newModuleFixture(t *testing.T, ctx context.Context, conf string, nodes int, edit map[string]string) *moduleFixture {
	t.Helper()
	nginxBin(t, false)
	moduleSO(t) // skip before starting anything
	root := worldDir(t, "rm-tbl-")
	var tables []string
	for i := range nodes {
		tables = append(tables, filepath.Join(root, fmt.Sprintf("n%d", i+1)))
	}
	f := newFixtureArgs(t, ctx, "", nodes, func(i int) []string { return []string{"--table-dir", tables[i]} })
	mf := &moduleFixture{fixture: f, tables: tables}
	f.nginx = startEditedNginx(t, conf, edit, mf.vars(tables[0]))
	mf.waitTable(ctx)
	return mf
}

func (mf *moduleFixture) vars(tables string) map[string]string {
	return map[string]string{"MODULE": moduleSO(mf.t), "RINGMAN_TABLES": tables}
}

// waitTable waits until nginx routes 30 URLs as the first node does: the
// table nginx maps has caught up with the ring.
func (mf *moduleFixture) waitTable(ctx context.Context) {
	mf.t.Helper()
	if _, _, err := mf.settled(ctx, host, paths("warmup", 30)); err != nil {
		mf.t.Fatal(err)
	}
}

// escapeAll percent-encodes every byte but letters, digits and "-._~", so
// that the key arrives byte for byte through ringman_candidates' unescape.
func escapeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// candidates asks module.conf's /_ringman/candidates for key: the kind
// ("ring", "override", "none") and the list, or the status when not 200.
func candidates(ctx context.Context, client *http.Client, addr, key string) (kind string, list []string, status int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/_ringman/candidates?key="+escapeAll(key), nil)
	if err != nil {
		return "", nil, 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", nil, resp.StatusCode, nil
	}
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	return lines[0], lines[1:], http.StatusOK, nil
}

// The module's answers (XXH64 of the key, the row, the override of the
// key's host, wildcards, case, ports, trailing dots, hosts at the 253-byte
// limit) equal ringman's RING.LOOKUP for the Lua table test's keys and more.
func TestModuleTableMatchesRingman(t *testing.T) {
	ctx := testContext(t, 120*time.Second)
	f := newModuleFixture(t, ctx, "module.conf", 3, nil)
	keys := tableKeys(t, ctx, f.fixture)
	long := strings.Repeat("a.", 126) + "a" // 253 bytes
	keys = append(keys, long+".example.com/x", long+"/x", long+"./x", long+".:80/x", long+"a/x", long+"a./x",
		"a..example.com/x", ".", ":", "./", "EXACT.EXAMPLE.COM", "x.EXACT.example.com/", "b.example.com/x", "z.b.example.com:1/x")
	rdb := f.nodes[0].Redis()
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	var checked, overrides, none int
	err := cluster.Poll(ctx, 50*time.Millisecond, "nginx's table answers every key as ringman does", func() (bool, string) {
		for _, key := range keys[checked:] {
			want, err := rdb.Do(ctx, "RING.LOOKUP", key, 8).StringSlice()
			if err != nil {
				return false, fmt.Sprintf("RING.LOOKUP %q: %v", key, err)
			}
			kind, got, status, err := candidates(ctx, client, f.nginx.Addr, key)
			if err != nil || status != http.StatusOK {
				return false, fmt.Sprintf("key %q: status %d, %v", key, status, err)
			}
			if !slices.Equal(got, want) {
				// The table may still be one write behind the overrides.
				return false, fmt.Sprintf("key %q: nginx answers %s %q, ringman %q", key, kind, got, want)
			}
			switch kind {
			case "override":
				overrides++
			case "none":
				none++
			}
			checked++
		}
		return true, ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if overrides == 0 {
		t.Errorf("no key was answered by an override")
	}
	t.Logf("%d keys answered from nginx's table exactly as ringman answers them (%d by an override, %d with no route)", checked, overrides, none)
	if f.logContains("[error]") || f.logContains("[crit]") || f.logContains("[alert]") {
		t.Errorf("nginx's error log has errors:\n%s", f.nginx.ErrorLog())
	}
}

// Through module.conf, 3,000 URLs reach the owners ringman names, within
// the load bound, the same URL always the same backend.
func TestModuleRouting(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	f := newModuleFixture(t, ctx, "module.conf", 3, nil)
	checkRouting(t, f.fixture)
	checkHostileKeys(t, f.fixture, true)
}

// The seed's snippet, verbatim: set_backend sets $backend to the owner and
// proxy_pass reaches it by address.
func TestModuleSetBackendSnippet(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	const snippet = `location / { set_backend $backend; proxy_pass http://$backend$request_uri; }`
	f := newModuleFixture(t, ctx, "module.conf", 3, map[string]string{
		"        location / {": "        " + snippet + "\n\n        location /unused/ {",
	})
	ps := paths("snippet", 600)
	got, err := f.fetchAll(host, ps)
	if err != nil {
		t.Fatal(err)
	}
	want, err := f.ringOwners(host, ps)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ps {
		if got[i] != want[i] {
			t.Fatalf("%s reached %s; ringman's owner is %s", ps[i], got[i], want[i])
		}
	}
	// The backend gets the URI as the client sent it ($request_uri).
	b := f.byAddr[f.backends[0].Addr]
	b.Reset()
	for _, p := range ps {
		if got, _ := f.get(host, p+"?q=1%202"); got.Backend == b.Name {
			if uris := b.URIs(); len(uris) != 1 || uris[0] != p+"?q=1%202" {
				t.Fatalf("%s received %q, want exactly %q", b.Name, uris, p+"?q=1%202")
			}
			break
		}
	}
	t.Logf("%d URLs through %q reached ringman's owners", len(ps), snippet)
}

// kill -9 of a node: its instance leaves the ring, the node nginx reads
// rewrites its table, and only the dead instance's URLs move.
func TestModuleNodeKilled(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	f := newModuleFixture(t, ctx, "module.conf", 3, nil)
	checkNodeKilled(t, ctx, f.fixture)
}

// Draining a node moves its URLs and no other, with no client error; with
// every node drained there is no route: 404.
func TestModuleDrain(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	f := newModuleFixture(t, ctx, "module.conf", 3, nil)
	checkDrain(t, ctx, f.fixture)
}

// Overrides (set on another node, carried by gossip into nginx's node's
// table) send their host's requests to their backend; a backend given as a
// hostname is skipped (502) with one clear error line.
func TestModuleOverride(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	f := newModuleFixture(t, ctx, "module.conf", 3, nil)
	checkOverride(t, ctx, f.fixture, `backends are not IP:port (first: "app.invalid:8080")`)
}

// A dead backend whose node lives: the balancer's next candidate serves its
// URLs; with every backend dead, 502.
func TestModuleBackendDown(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	f := newModuleFixture(t, ctx, "module.conf", 3, nil)
	checkBackendDown(t, f.fixture)
}

// A stopped ringman stops touching its files: nginx routes from the last
// table for ringman_max_stale, then answers 503, and routes again once the
// node runs again.
func TestModuleStaleTable(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	const maxStale = 3 * time.Second
	f := newModuleFixture(t, ctx, "module.conf", 1, map[string]string{"ringman_max_stale 30s;": "ringman_max_stale 3s;"})
	want := f.backends[0].Name
	status := func() (int, string) {
		r, err := f.get(host, "/stale/1")
		if err != nil {
			return 0, err.Error()
		}
		return r.Status, r.Backend
	}
	if err := f.nodes[0].Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer f.nodes[0].Signal(syscall.SIGCONT)
	stopped := time.Now()
	if code, b := status(); code != http.StatusOK || b != want {
		t.Fatalf("ringman stopped %v ago: status %d from %q, want 200 from %s (the last table)", time.Since(stopped), code, b, want)
	}
	err := cluster.Poll(ctx, 50*time.Millisecond, "nginx answers 503 once the table is stale", func() (bool, string) {
		code, b := status()
		return code == http.StatusServiceUnavailable, fmt.Sprintf("status %d from %q", code, b)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The file was last touched up to a heartbeat (1 s) before the stop.
	if took := time.Since(stopped); took < maxStale-1500*time.Millisecond {
		t.Errorf("503 after %v, well before max_stale (%v)", took, maxStale)
	}
	t.Logf("503 %v after ringman stopped (max_stale %v)", time.Since(stopped).Round(time.Millisecond), maxStale)
	if !f.logContains("more than ringman_max_stale") {
		t.Errorf("nginx's error log does not say the table went stale:\n%s", f.nginx.ErrorLog())
	}
	if err := f.nodes[0].Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	err = cluster.Poll(ctx, 50*time.Millisecond, "nginx routes again once ringman runs", func() (bool, string) {
		code, b := status()
		return code == http.StatusOK && b == want, fmt.Sprintf("status %d from %q", code, b)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// newNoTableFixture starts one node writing its tables to tables, for an
// nginx (not started) pointed first at empty, a directory with no table;
// so is the module.
func newNoTableFixture(t *testing.T, ctx context.Context) (f *fixture, so, tables, empty string) {
	t.Helper()
	nginxBin(t, false)
	so = moduleSO(t)
	tables = filepath.Join(worldDir(t, "rm-tbl-"), "n1")
	f = newFixtureArgs(t, ctx, "", 1, func(int) []string { return []string{"--table-dir", tables} })
	return f, so, tables, worldDir(t, "rm-empty-")
}

// Before any table: 503, and one log line saying which file is missing.
// `nginx -s reload` with a ringman_table_dir that has one routes at once.
// A refused file (bad checksum) is logged and the table in use stays.
func TestModuleNoTableAndReload(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	f, so, tables, empty := newNoTableFixture(t, ctx)
	conf, err := nginxrun.ReadConfig("module.conf")
	if err != nil {
		t.Fatal(err)
	}
	f.nginx = startNginx(t, "module.conf", map[string]string{"MODULE": so, "RINGMAN_TABLES": empty})
	for _, p := range []string{"/a", "/_ringman/candidates?key=a"} {
		r, err := f.get(host, p)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != http.StatusServiceUnavailable {
			t.Errorf("GET %s with no table: %+v, want 503", p, r)
		}
	}
	if missing := fmt.Sprintf(`no table "%s/web.table"`, empty); !f.logContains(missing) {
		t.Errorf("nginx's error log does not say %s:\n%s", missing, f.nginx.ErrorLog())
	}

	if err := f.nginx.Reload(conf, map[string]string{"MODULE": so, "RINGMAN_TABLES": tables}); err != nil {
		t.Fatal(err)
	}
	want := f.backends[0].Name
	err = cluster.Poll(ctx, 20*time.Millisecond, "nginx routes after the reload", func() (bool, string) {
		r, err := f.get(host, "/a")
		if err != nil {
			return false, err.Error()
		}
		return r.Status == http.StatusOK && r.Backend == want, fmt.Sprintf("got %+v", r)
	})
	if err != nil {
		t.Fatal(err)
	}

	// A corrupt file renamed over the table is refused; routing goes on.
	raw, err := os.ReadFile(filepath.Join(tables, "web.table"))
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-1] ^= 0xff
	tmp := filepath.Join(tables, "corrupt.tmp")
	if err := os.WriteFile(tmp, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(tables, "web.table")); err != nil {
		t.Fatal(err)
	}
	err = cluster.Poll(ctx, 20*time.Millisecond, "nginx refuses the corrupt table", func() (bool, string) {
		return f.logContains("refused: checksum"), "no refusal in the error log yet"
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		r, err := f.get(host, fmt.Sprintf("/after/%d", i))
		if err != nil || r.Status != http.StatusOK || r.Backend != want {
			t.Fatalf("after the corrupt file: %+v %v, want 200 from %s", r, err, want)
		}
	}
	if n := strings.Count(f.nginx.ErrorLog(), "refused: checksum"); n != 1 {
		t.Errorf("the corrupt file was logged %d times, want once:\n%s", n, f.nginx.ErrorLog())
	}
}

// static_then_ring.conf: files nginx has are served from disk, other URLs
// by their owners; nginx's own 502 and 503 get the config's pages.
func TestModuleStaticThenRing(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	nginxBin(t, false)
	so := moduleSO(t)
	tables := filepath.Join(worldDir(t, "rm-tbl-"), "n1")
	f := newFixtureArgs(t, ctx, "", 3, func(i int) []string {
		if i == 0 {
			return []string{"--table-dir", tables}
		}
		return nil
	})
	conf, err := nginxrun.ReadConfig("static_then_ring.conf")
	if err != nil {
		t.Fatal(err)
	}
	bin := nginxBin(t, false)
	dir := worldDir(t, "rm-ng-") // the workers read html/
	if err := os.MkdirAll(filepath.Join(dir, "html", "static"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "html", "static", "a.txt"), []byte("from disk\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"MODULE": so, "RINGMAN_TABLES": tables}
	preload, sanDir := sanitizers(t)
	ng, err := nginxrun.Start(ctx, nginxrun.Config{Bin: bin, Dir: dir, Conf: conf, Vars: vars, ReadyTimeout: nginxReady, QuitWait: nginxQuit,
		Preload: preload, SanitizerDir: sanDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ng.Stop()
		if t.Failed() {
			t.Logf("nginx logs:\n%s", ng.Logs())
		}
	})
	f.nginx = ng
	ps := paths("dyn", 200)
	if _, _, err := f.settled(ctx, host, ps); err != nil {
		t.Fatal(err)
	}
	body := func(p string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ng.Addr+p, nil)
		req.Host = host
		resp, err := f.client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("X-Backend") + "|" + string(b)
	}
	if code, b := body("/static/a.txt"); code != http.StatusOK || b != "|from disk\n" {
		t.Errorf("static file: %d %q, want 200 from disk", code, b)
	}
	for _, b := range f.backends {
		b.Close()
	}
	if code, b := body("/dyn/x"); code != http.StatusBadGateway || !strings.Contains(b, "The server for this page is down") {
		t.Errorf("every backend down: %d %q, want 502 with the config's page", code, b)
	}
	empty := worldDir(t, "rm-empty-")
	if err := ng.Reload(conf, map[string]string{"MODULE": so, "RINGMAN_TABLES": empty}); err != nil {
		t.Fatal(err)
	}
	err = cluster.Poll(ctx, 20*time.Millisecond, "503 with the config's page once there is no table", func() (bool, string) {
		code, b := body("/dyn/y")
		return code == http.StatusServiceUnavailable && strings.Contains(b, "Routing is not available"), fmt.Sprintf("%d %q", code, b)
	})
	if err != nil {
		t.Fatal(err)
	}
	if code, b := body("/static/a.txt"); code != http.StatusOK || b != "|from disk\n" {
		t.Errorf("static file without a table: %d %q, want 200 from disk", code, b)
	}
}

// balanceEdits turn module.conf into the balance tests' config: two
// workers, so that the counts must be shared between them, and
// balance_factor=1.5. The fixture waits for the table with 16 requests at
// a time, which a balanced upstream sends to second candidates whenever
// they pile up on an owner: that wait could last past the test's deadline
// on a busy machine. It goes through an unbalanced upstream of the same
// service (one table per service and worker) instead, and counts nothing.
// (Its key is quoted: the edits apply in any order, and the first one
// must find the balanced upstream's line.)
var balanceEdits = map[string]string{
	"ringman_hash $host$uri service=web;": "ringman_hash $host$uri service=web balance_factor=1.5;",
	"worker_processes 1;":                 "worker_processes 2;",
	"    upstream ringman_web {":          "    upstream ringman_unbalanced {\n        ringman_hash \"$host$uri\" service=web;\n    }\n\n    upstream ringman_web {",
	"        location / {":                "        location /warmup/ {\n            proxy_pass http://ringman_unbalanced;\n        }\n\n        location / {",
}

// balance_factor=1.5: while the owner carries more than ceil(1.5 x the
// average in flight), its keys go to their next candidate under that
// bound; once the requests end, the owner gets its keys back.
func TestModuleBalanceFactor(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	f := newModuleFixture(t, ctx, "module.conf", 3, balanceEdits)
	const inFlight = 6
	owner := f.backends[0]
	mine := f.ownedBy(owner, inFlight+10)
	releaseAll := f.holdAll()
	defer releaseAll()
	// One at a time, each once the previous one is held: the bound each
	// request meets is known. ceil(1.5 x (k+1) / 3) for the k-th.
	results := make(chan result, inFlight)
	for i := range inFlight {
		go func() {
			r, err := f.get(host, mine[i])
			if err != nil {
				r.Backend = err.Error()
			}
			results <- r
		}()
		err := cluster.Poll(ctx, 5*time.Millisecond, fmt.Sprintf("%d requests held", i+1), func() (bool, string) {
			n, counts := f.held()
			return n == i+1, fmt.Sprint(counts)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	_, counts := f.held()
	if counts[owner.Name] != 3 {
		t.Errorf("%d requests in flight for %s's keys: %v; want 3 on %s (the bound ceil(1.5 x 6 / 3))",
			inFlight, owner.Name, counts, owner.Name)
	}
	t.Logf("in flight with balance_factor=1.5: %v", counts)
	releaseAll()
	for range inFlight {
		if r := <-results; r.Status != http.StatusOK {
			t.Errorf("a held request: %+v", r)
		}
	}
	// Nothing in flight: the owner serves its keys again (the counts went
	// back to 0). A worker counts a request out just after it wrote the
	// response, so the next request, on the other worker, may still meet
	// the previous one's count and go to a second candidate: poll. A count
	// that never comes back (a try counted out never or twice) fails.
	for _, p := range mine[inFlight : inFlight+10] {
		err := cluster.Poll(ctx, 10*time.Millisecond, p+" reaches its owner "+owner.Name+" after the load", func() (bool, string) {
			r, err := f.get(host, p)
			if err != nil {
				return false, err.Error()
			}
			return r.Status == http.StatusOK && r.Backend == owner.Name, fmt.Sprintf("%+v", r)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// oneInstanceTable returns a table file of service web that sends every
// key to addr.
func oneInstanceTable(t *testing.T, epoch uint64, addr string) []byte {
	t.Helper()
	raw, err := tablefile.Encode(&router.Export{Epoch: epoch, Hash: "xxhash64", Partitions: 4, Width: 1,
		Instances: []string{addr}, Table: []uint32{0, 0, 0, 0}})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// A refused file is remembered by its inode, so that it is not read again
// on every refresh. Once it is gone, a later good file may get the same
// inode number (ext4 hands a freed inode out again at once) and the same
// size (ringman's tables keep their shape): that file must be read, not
// taken for the refused one, or nginx would route from the old table and
// answer 503 once it went stale.
func TestModuleRefusedInodeReused(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	nginxBin(t, false)
	so := moduleSO(t)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	tblA, tblB := oneInstanceTable(t, 1, a.Addr), oneInstanceTable(t, 2, b.Addr)
	if len(tblA) != len(tblB) {
		t.Skipf("backends %s and %s: the test needs tables of one size", a.Addr, b.Addr)
	}
	dir := worldDir(t, "rm-tbl-")
	path := filepath.Join(dir, "web.table")
	inode := func(p string) uint64 {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	// put renames tmp, holding raw, over the table and returns its inode.
	put := func(tmp string, raw []byte) uint64 {
		t.Helper()
		if raw != nil {
			if err := os.WriteFile(tmp, raw, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		ino := inode(tmp)
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		return ino
	}
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	var ng *nginxrun.Nginx
	routesTo := func(want *backend, why string) {
		t.Helper()
		err := cluster.Poll(ctx, 10*time.Millisecond, "nginx routes to "+want.Name+" "+why, func() (bool, string) {
			r, err := get(ctx, client, ng.Addr, host, "/x")
			if err != nil {
				return false, err.Error()
			}
			return r.Status == http.StatusOK && r.Backend == want.Name, fmt.Sprintf("%+v", r)
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	put(filepath.Join(dir, "a.tmp"), tblA)
	ng = startNginx(t, "module.conf", map[string]string{"MODULE": so, "RINGMAN_TABLES": dir})
	routesTo(a, "from the first table")

	corrupt := slices.Clone(tblB)
	corrupt[len(corrupt)-1] ^= 0xff
	bad := put(filepath.Join(dir, "corrupt.tmp"), corrupt)
	err := cluster.Poll(ctx, 10*time.Millisecond, "nginx refuses the corrupt table", func() (bool, string) {
		return strings.Contains(ng.ErrorLog(), "refused: checksum"), "no refusal in the error log yet"
	})
	if err != nil {
		t.Fatal(err)
	}
	// Created while the corrupt file is still there: another inode.
	put(filepath.Join(dir, "b.tmp"), tblB)
	routesTo(b, "once a good file replaced the corrupt one")

	// The corrupt file is gone now (nginx saw another file at the path).
	// Look for its inode among new files of table A's bytes.
	var reused string
	for i := range 20 {
		tmp := filepath.Join(dir, fmt.Sprintf("again%d.tmp", i))
		if err := os.WriteFile(tmp, tblA, 0o644); err != nil {
			t.Fatal(err)
		}
		if inode(tmp) == bad {
			reused = tmp
			break
		}
	}
	if reused == "" {
		t.Skipf("the filesystem of %s did not hand out inode %d again", dir, bad)
	}
	put(reused, nil)
	routesTo(a, "from a good file with the refused one's inode and size")
	if n := strings.Count(ng.ErrorLog(), "refused: checksum"); n != 1 {
		t.Errorf("the corrupt file was logged %d times, want once:\n%s", n, ng.ErrorLog())
	}
}

// A try is counted out once whatever ends it: a client that gives up while
// the backend holds its request (499) leaves no count behind, which would
// make its instance look busy for good and send its keys elsewhere.
func TestModuleBalanceClientAbort(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	f := newModuleFixture(t, ctx, "module.conf", 3, balanceEdits)
	const aborted = 4
	owner := f.backends[0]
	mine := f.ownedBy(owner, aborted+5)
	release := owner.Hold()
	defer release()
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	done := make(chan error, aborted)
	for i := range aborted {
		rctx, cancel := context.WithCancel(ctx)
		go func() {
			_, err := get(rctx, client, f.nginx.Addr, host, mine[i])
			done <- err
		}()
		// One at a time: each reaches the owner (under the bound
		// ceil(1.5 x 1 / 3)) only if the aborted ones were counted out,
		// and waits there beside them (the backend holds them all).
		err := cluster.Poll(ctx, 5*time.Millisecond, fmt.Sprintf("request %d held by %s", i+1, owner.Name), func() (bool, string) {
			n := owner.Held()
			return n == i+1, fmt.Sprintf("%d held", n)
		})
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := <-done; err == nil {
			t.Fatalf("request %d: not canceled", i+1)
		}
		access := filepath.Join(f.nginx.Dir, "logs", "access.log")
		err = cluster.Poll(ctx, 5*time.Millisecond, fmt.Sprintf("nginx logs request %d as 499", i+1), func() (bool, string) {
			raw, _ := os.ReadFile(access)
			n := strings.Count(string(raw), `" 499 `)
			return n == i+1, fmt.Sprintf("%d requests logged 499", n)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	release()
	// Every count is back to 0: the owner serves its keys (polled: a
	// worker counts a request out just after it wrote the response).
	for _, p := range mine[aborted : aborted+5] {
		err := cluster.Poll(ctx, 10*time.Millisecond, p+" reaches its owner "+owner.Name, func() (bool, string) {
			r, err := f.get(host, p)
			if err != nil {
				return false, err.Error()
			}
			return r.Status == http.StatusOK && r.Backend == owner.Name, fmt.Sprintf("%+v", r)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// ownedBy returns the /hold/ URLs (of 300) that ringman places on b,
// failing the test when fewer than want are.
func (f *fixture) ownedBy(b *backend, want int) []string {
	f.t.Helper()
	ps := paths("hold", 300)
	owners, err := f.ringOwners(host, ps)
	if err != nil {
		f.t.Fatal(err)
	}
	var mine []string
	for i, p := range ps {
		if owners[i] == b.Name {
			mine = append(mine, p)
		}
	}
	if len(mine) < want {
		f.t.Fatalf("only %d of %d URLs are owned by %s, want %d", len(mine), len(ps), b.Name, want)
	}
	return mine
}

// holdAll makes every backend hold its /hold/ requests until the returned
// func is called (more than once is fine).
func (f *fixture) holdAll() (release func()) {
	var releases []func()
	for _, b := range f.backends {
		releases = append(releases, b.Hold())
	}
	return func() {
		for _, r := range releases {
			r()
		}
	}
}

// held returns how many requests the backends hold, in all and by name.
func (f *fixture) held() (total int, counts map[string]int) {
	counts = map[string]int{}
	for _, b := range f.backends {
		counts[b.Name] = b.Held()
		total += counts[b.Name]
	}
	return total, counts
}
