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
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"ringman/test/cluster"
)

const (
	modulesDir = "/usr/lib/nginx/modules"
	// nginxReady bounds nginx's start; it is ready in ~50 ms on an idle machine.
	nginxReady = 10 * time.Second
	// nginxQuit is how long Stop waits after SIGQUIT before killing the group.
	nginxQuit = 5 * time.Second
)

// nginxBin returns the nginx binary, or skips the test saying what to install.
// Debian installs it in /usr/sbin, which is not in every user's PATH.
func nginxBin(t *testing.T, needLua bool) string {
	t.Helper()
	path, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			t.Skip("nginx is not installed: apt-get install nginx libnginx-mod-http-lua (or `make test-deps`)")
		}
		path = "/usr/sbin/nginx"
	}
	if needLua {
		for _, m := range []string{"ndk_http_module.so", "ngx_http_lua_module.so"} {
			if _, err := os.Stat(filepath.Join(modulesDir, m)); err != nil {
				t.Skipf("nginx's Lua module is not installed (%s missing): apt-get install libnginx-mod-http-lua (or `make test-deps`)", m)
			}
		}
	}
	return path
}

// configDir is the repository's nginx/ directory.
func configDir(t *testing.T) string {
	t.Helper()
	root, err := cluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "nginx")
}

var placeholder = regexp.MustCompile(`@[A-Z_]+@`)

// renderConfig returns nginx/<name> with its @PLACEHOLDERS@ replaced; it
// fails when one is left.
func renderConfig(t *testing.T, name string, vars map[string]string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(configDir(t), name))
	if err != nil {
		t.Fatal(err)
	}
	out := placeholder.ReplaceAllFunc(raw, func(m []byte) []byte {
		if v, ok := vars[string(m[1:len(m)-1])]; ok {
			return []byte(v)
		}
		return m
	})
	// Only look outside comments: the header documents the placeholders.
	for _, line := range strings.Split(string(out), "\n") {
		if code, _, _ := strings.Cut(line, "#"); placeholder.MatchString(code) {
			t.Fatalf("%s: placeholder left after substitution: %q", name, strings.TrimSpace(line))
		}
	}
	return out
}

// nginxProc is one nginx master (and its workers) in its own process group,
// run from a prefix directory of the test's own.
type nginxProc struct {
	Addr string // 127.0.0.1:port it listens on
	Dir  string

	cmd  *exec.Cmd
	done chan struct{}
}

// startNginx renders nginx/<conf> into a fresh prefix (with ringman.lua in
// lua/) and starts nginx unprivileged on a free port; it is stopped when the
// test ends, and its logs are shown when the test failed.
func startNginx(t *testing.T, conf string, vars map[string]string) *nginxProc {
	t.Helper()
	bin := nginxBin(t, strings.Contains(conf, "lua"))
	dir := t.TempDir()
	for _, d := range []string{"lua", "logs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	lua, err := os.ReadFile(filepath.Join(configDir(t), "ringman.lua"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "lua", "ringman.lua"), lua, 0o644); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := cluster.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		v := map[string]string{"LISTEN": fmt.Sprintf("127.0.0.1:%d", port)}
		for k, val := range vars {
			v[k] = val
		}
		if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), renderConfig(t, conf, v), 0o644); err != nil {
			t.Fatal(err)
		}
		p := &nginxProc{Addr: v["LISTEN"], Dir: dir}
		lastErr = p.start(bin)
		if lastErr == nil {
			t.Cleanup(func() {
				p.Stop()
				if t.Failed() {
					t.Logf("nginx (%s) logs:\n%s", conf, p.Logs())
				}
			})
			return p
		}
		if !strings.Contains(lastErr.Error(), "Address already in use") {
			break
		}
	}
	t.Fatalf("start nginx with %s: %v", conf, lastErr)
	return nil
}

func (p *nginxProc) start(bin string) error {
	out, err := os.Create(filepath.Join(p.Dir, "logs", "stderr.log"))
	if err != nil {
		return err
	}
	defer out.Close()
	p.cmd = exec.Command(bin, "-p", p.Dir+"/", "-c", filepath.Join(p.Dir, "nginx.conf"), "-e", "stderr", "-g", "daemon off;")
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = cluster.SysProcAttr() // own process group, killed with the test binary
	if err := p.cmd.Start(); err != nil {
		return err
	}
	p.done = make(chan struct{})
	go func() { p.cmd.Wait(); close(p.done) }()
	ctx, cancel := context.WithTimeout(context.Background(), nginxReady)
	defer cancel()
	var exited bool
	err = cluster.Poll(ctx, 10*time.Millisecond, "nginx accepts connections on "+p.Addr, func() (bool, string) {
		select {
		case <-p.done:
			exited = true
			return true, ""
		default:
		}
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
	if exited {
		return fmt.Errorf("nginx exited at start (%s):\n%s", p.cmd.ProcessState, p.Logs())
	}
	if err != nil {
		p.Stop()
		return fmt.Errorf("%w\n%s", err, p.Logs())
	}
	return nil
}

// Stop asks nginx to finish gracefully (SIGQUIT), and kills its whole process
// group when the master is not gone in time. The group is killed in any case:
// a worker whose master was SIGKILLed keeps serving the port.
func (p *nginxProc) Stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	pid := p.cmd.Process.Pid
	p.cmd.Process.Signal(syscall.SIGQUIT)
	t := time.NewTimer(nginxQuit)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
	}
	syscall.Kill(-pid, syscall.SIGKILL)
	<-p.done
}

// Logs returns nginx's stderr and the end of its error log.
func (p *nginxProc) Logs() string {
	var b strings.Builder
	for _, f := range []string{"stderr.log", "error.log"} {
		raw, _ := os.ReadFile(filepath.Join(p.Dir, "logs", f))
		if len(raw) > 16<<10 {
			raw = raw[len(raw)-16<<10:]
		}
		fmt.Fprintf(&b, "--- %s ---\n%s\n", f, raw)
	}
	return b.String()
}

// ErrorLog returns nginx's error log.
func (p *nginxProc) ErrorLog() string {
	raw, _ := os.ReadFile(filepath.Join(p.Dir, "logs", "error.log"))
	return string(raw)
}

// backend is a real HTTP instance: it answers every request with its name
// and records the request URIs it was sent.
type backend struct {
	Name string
	Addr string

	srv *http.Server

	mu   sync.Mutex
	uris []string
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
	b.mu.Unlock()
	w.Header().Set("X-Backend", b.Name)
	io.WriteString(w, b.Name)
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
	nginx    *nginxProc
	client   *http.Client
}

// newFixture starts the processes; conf "" starts no nginx.
func newFixture(t *testing.T, ctx context.Context, conf string, nodes int) *fixture {
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
	f := &fixture{t: t, ctx: ctx, byAddr: map[string]*backend{}}
	var instances []string
	for i := 1; i <= nodes; i++ {
		b := startBackend(t, fmt.Sprintf("b%d", i))
		f.backends = append(f.backends, b)
		f.byAddr[b.Addr] = b
		cfg := cluster.NodeConfig{Name: fmt.Sprintf("n%d", i), Services: []string{"web=" + b.Addr}}
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
