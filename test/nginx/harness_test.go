package nginx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"ringman/test/cluster"
	"ringman/test/nginxrun"
)

const (
	modulesDir = nginxrun.ModulesDir
	// nginxReady bounds nginx's start; it is ready in ~50 ms on an idle machine.
	nginxReady = 10 * time.Second
	// nginxQuit is how long Stop waits after SIGQUIT before killing the group.
	nginxQuit = 5 * time.Second
)

// nginxBin returns the nginx binary, or skips the test saying what to install.
func nginxBin(t *testing.T, needLua bool) string {
	t.Helper()
	path, err := nginxrun.Binary()
	if err != nil {
		t.Skip("nginx is not installed: apt-get install nginx libnginx-mod-http-lua (or `make test-deps`)")
	}
	if needLua {
		if m := nginxrun.MissingLuaModule(); m != "" {
			t.Skipf("nginx's Lua module is not installed (%s missing): apt-get install libnginx-mod-http-lua (or `make test-deps`)", m)
		}
	}
	return path
}

// renderConfig returns nginx/<name> with its @PLACEHOLDERS@ replaced; it
// fails when one is left.
func renderConfig(t *testing.T, name string, vars map[string]string) []byte {
	t.Helper()
	raw, err := nginxrun.ReadConfig(name)
	if err != nil {
		t.Fatal(err)
	}
	out, err := nginxrun.Render(raw, vars)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return []byte(out)
}

// startNginx renders nginx/<conf> into a fresh prefix (with ringman.lua in
// lua/) and starts nginx unprivileged on a free port; it is stopped when the
// test ends, and its logs are shown when the test failed.
func startNginx(t *testing.T, conf string, vars map[string]string) *nginxrun.Nginx {
	t.Helper()
	return startEditedNginx(t, conf, nil, vars)
}

// startEditedNginx is startNginx with conf's text passed through edit
// first (nil: unchanged). An edit that finds nothing to change fails the test.
func startEditedNginx(t *testing.T, conf string, edit map[string]string, vars map[string]string) *nginxrun.Nginx {
	t.Helper()
	bin := nginxBin(t, strings.Contains(conf, "lua"))
	raw, err := nginxrun.ReadConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	for old, repl := range edit {
		if !strings.Contains(raw, old) {
			t.Fatalf("%s has no %q to replace", conf, old)
		}
		raw = strings.Replace(raw, old, repl, 1)
	}
	preload, sanDir := sanitizers(t)
	p, err := nginxrun.Start(context.Background(), nginxrun.Config{
		Bin:          bin,
		Dir:          t.TempDir(),
		Conf:         raw,
		Vars:         vars,
		ReadyTimeout: nginxReady,
		QuitWait:     nginxQuit,
		Preload:      preload,
		SanitizerDir: sanDir,
	})
	if err != nil {
		t.Fatalf("start nginx with %s: %v", conf, err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("nginx (%s) logs:\n%s", conf, p.Logs())
		}
	})
	return p
}

// sanitizers returns $RINGMAN_NGINX_PRELOAD (see nginxrun.Env; "" when
// unset) and a directory for the sanitizers' reports that nginx's workers
// can write. Once the test's nginx is stopped (its cleanup, registered
// after this call, runs first), a report in it fails the test: the module
// under test was built with -fsanitize (make test-nginx-asan).
func sanitizers(t *testing.T) (preload, dir string) {
	t.Helper()
	preload = os.Getenv(nginxrun.EnvPreload)
	if preload == "" {
		return "", ""
	}
	dir = worldDir(t, "rm-san-")
	if err := os.Chmod(dir, 0o777); err != nil { // the workers run as nobody under root
		t.Fatal(err)
	}
	t.Cleanup(func() {
		reports, err := nginxrun.SanitizerReports(dir)
		if err != nil {
			t.Error(err)
		} else if reports != "" {
			// Each report stops a worker and nginx starts another, which
			// may meet the same bug: the first ones say enough.
			if len(reports) > 32<<10 {
				reports = fmt.Sprintf("%s\n[... %d more bytes of reports]", reports[:32<<10], len(reports)-32<<10)
			}
			t.Errorf("sanitizer reports from nginx (module %s):\n%s", os.Getenv(nginxrun.EnvModule), reports)
		}
	})
	return preload, dir
}

// backend is a real HTTP instance: it answers every request with its name
// (and echoes the method and the start of the body in X-Echo), and records
// the request URIs it was sent.
type backend struct {
	Name string
	Addr string

	srv *http.Server

	mu   sync.Mutex
	uris []string
	hold chan struct{} // non-nil: requests for /hold/... wait until it is closed
	held int           // requests waiting on hold now
}

func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{Name: name, Addr: ln.Addr().String()}
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 5 * time.Second}
	go b.srv.Serve(ln)
	t.Cleanup(b.Close)
	return b
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	if len(b.uris) < 100_000 {
		b.uris = append(b.uris, r.RequestURI)
	}
	hold := b.hold
	if hold != nil && strings.HasPrefix(r.URL.Path, "/hold/") {
		b.held++
		b.mu.Unlock()
		<-hold
		b.mu.Lock()
		b.held--
	}
	b.mu.Unlock()
	w.Header().Set("X-Backend", b.Name)
	// What arrived, for tests that send more than a GET.
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1024))
	w.Header().Set("X-Echo", r.Method+" "+strconv.Quote(string(body)))
	io.WriteString(w, b.Name)
}

// Hold makes requests for /hold/... wait until the returned func is called.
func (b *backend) Hold() (release func()) {
	ch := make(chan struct{})
	b.mu.Lock()
	b.hold = ch
	b.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			b.hold = nil
			b.mu.Unlock()
			close(ch)
		})
	}
}

// Held returns how many requests wait on Hold now.
func (b *backend) Held() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held
}

// URIs returns the request URIs received so far.
func (b *backend) URIs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.uris...)
}

// Reset forgets the URIs received so far.
func (b *backend) Reset() {
	b.mu.Lock()
	b.uris = nil
	b.mu.Unlock()
}

// Close stops the backend at once: its port refuses connections afterwards.
func (b *backend) Close() { b.srv.Close() }

// fixture is nodes `ringman serve` processes, one backend each (service
// web), and nginx running one of the configs against the first node.
type fixture struct {
	t        *testing.T
	ctx      context.Context
	nodes    []*cluster.Node
	backends []*backend
	byAddr   map[string]*backend
	weights  map[string]float64 // by backend name
	nginx    *nginxrun.Nginx
	client   *http.Client
}

// newFixture starts the processes; conf "" starts no nginx.
func newFixture(t *testing.T, ctx context.Context, conf string, nodes int) *fixture {
	t.Helper()
	return newFixtureArgs(t, ctx, conf, nodes, nil)
}

// newFixtureArgs is newFixture with extra `serve` flags for node i (from
// 0) from nodeArgs (nil: none).
func newFixtureArgs(t *testing.T, ctx context.Context, conf string, nodes int, nodeArgs func(i int) []string) *fixture {
	t.Helper()
	if conf != "" {
		nginxBin(t, strings.Contains(conf, "lua")) // skip before starting anything
	}
	if buildErr != nil {
		t.Fatalf("cannot build the ringman binary: %v", buildErr)
	}
	c := cluster.New(bin, t.TempDir())
	t.Cleanup(func() {
		c.Kill() // no graceful leaves needed: nothing is tested after this
		if t.Failed() {
			t.Logf("ringman logs:\n%s", c.Logs())
		}
	})
	f := &fixture{t: t, ctx: ctx, byAddr: map[string]*backend{}, weights: map[string]float64{}}
	var instances []string
	for i := 1; i <= nodes; i++ {
		b := startBackend(t, fmt.Sprintf("b%d", i))
		f.backends = append(f.backends, b)
		f.byAddr[b.Addr] = b
		cfg := cluster.NodeConfig{Name: fmt.Sprintf("n%d", i), Services: []string{"web=" + b.Addr}}
		f.weights[b.Name] = 1
		if i == 2 {
			// One heavier instance with a stable id: nginx follows weights
			// and ids from the same table as the rest.
			cfg.Services[0] += ",id=backend-two,weight=2"
			f.weights[b.Name] = 2
		}
		if nodeArgs != nil {
			cfg.Args = nodeArgs(i - 1)
		}
		if i > 1 {
			cfg.Join = []string{f.nodes[0].GossipAddr}
		}
		n, err := c.Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		f.nodes = append(f.nodes, n)
		instances = append(instances, b.Addr)
	}
	if err := cluster.WaitInstances(ctx, f.nodes, instances); err != nil {
		t.Fatal(err)
	}
	f.client = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: 32,
			DisableCompression:  true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	if conf != "" {
		f.nginx = startNginx(t, conf, map[string]string{
			"RINGMAN_RESP": f.nodes[0].RESPAddr,
			"RINGMAN_HTTP": f.nodes[0].HTTPAddr,
		})
	}
	// Registered after nginx's cleanup, so it runs first: nginx's graceful
	// quit waits for connections that were opened but never sent a request
	// (the transport dials spares), until client_header_timeout.
	t.Cleanup(f.client.CloseIdleConnections)
	return f
}

// result is one response through nginx.
type result struct {
	Status  int
	Backend string // body of a backend's answer, "" when nginx answered itself
	Took    time.Duration
}

// get sends GET rawURI (sent exactly as given) with Host host through nginx.
func (f *fixture) get(host, rawURI string) (result, error) {
	return get(f.ctx, f.client, f.nginx.Addr, host, rawURI)
}

func get(ctx context.Context, client *http.Client, addr, host, rawURI string) (result, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return result{}, err
	}
	req.URL = &url.URL{Scheme: "http", Host: addr, Opaque: rawURI}
	req.Host = host
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return result{}, fmt.Errorf("GET %s (Host %s): %w", rawURI, host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return result{}, fmt.Errorf("GET %s (Host %s): body: %w", rawURI, host, err)
	}
	r := result{Status: resp.StatusCode, Took: time.Since(start)}
	if name := resp.Header.Get("X-Backend"); name != "" {
		r.Backend = string(body)
	}
	return r, nil
}

// fetchAll sends GET for every path with Host host, workers at a time, and
// returns the backend that answered each; every answer must be a 200 from
// a backend.
func (f *fixture) fetchAll(host string, paths []string) ([]string, error) {
	const workers = 16
	out := make([]string, len(paths))
	errs := make([]error, workers)
	var next sync.Mutex
	i := 0
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for {
				next.Lock()
				k := i
				i++
				next.Unlock()
				if k >= len(paths) {
					return
				}
				r, err := f.get(host, paths[k])
				if err == nil && (r.Status != http.StatusOK || r.Backend == "") {
					err = fmt.Errorf("GET %s (Host %s): status %d, backend %q", paths[k], host, r.Status, r.Backend)
				}
				if err != nil {
					errs[w] = err
					return
				}
				out[k] = r.Backend
			}
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// owners asks the first node RING.LOOKUP key n for every key and returns
// the candidates as backend names.
func (f *fixture) owners(keys []string, n int) ([][]string, error) {
	out := make([][]string, len(keys))
	for i, k := range keys {
		got, err := f.nodes[0].Redis().Do(f.ctx, "RING.LOOKUP", k, n).StringSlice()
		if err != nil {
			return nil, fmt.Errorf("RING.LOOKUP %q %d: %w", k, n, err)
		}
		for _, inst := range got {
			b, ok := f.byAddr[inst]
			if !ok {
				return nil, fmt.Errorf("RING.LOOKUP %q: %q is no backend of the test", k, inst)
			}
			out[i] = append(out[i], b.Name)
		}
	}
	return out, nil
}

// paths returns count distinct URL paths.
func paths(prefix string, count int) []string {
	out := make([]string, count)
	for i := range out {
		out[i] = fmt.Sprintf("/%s/%d.jpg", prefix, i)
	}
	return out
}

// instances returns the backends' addresses, without skip.
func (f *fixture) instances(skip ...*backend) []string {
	var out []string
outer:
	for _, b := range f.backends {
		for _, s := range skip {
			if b == s {
				continue outer
			}
		}
		out = append(out, b.Addr)
	}
	return out
}

// logContains reports whether s occurs in nginx's error log.
func (f *fixture) logContains(s string) bool {
	return bytes.Contains([]byte(f.nginx.ErrorLog()), []byte(s))
}
