package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"ringman/test/cluster"
)

// The nginx section: wrk against nginx on this machine, with three real
// `ringman serve` nodes each advertising one in-process Go HTTP backend.
// Four configs, alternating, medians of req/s and latency p50/p99:
//
//   - static: proxy_pass to one backend (upstream keepalive);
//   - hash: nginx's built-in `hash $request_uri consistent` over the three
//     backends (upstream keepalive): the peer of the ringman configs;
//   - lua: ringman's nginx/lua.conf (a RESP lookup per request);
//   - auth_request: ringman's nginx/auth_request.conf (an HTTP subrequest
//     per request, no backend keepalive).
//
// Issue 4's goal: each ringman config at ≥ 0.9× the built-in hash's req/s.
const (
	nginxGoal = 0.9
	// wrk's load: 2 threads, 50 connections, 5 s per run.
	wrkThreads     = 2
	wrkConnections = 50
	wrkDuration    = 5 * time.Second
	// wrkBound bounds one wrk run (its duration plus start and report).
	wrkBound = wrkDuration + 15*time.Second
	// nginxStart bounds nginx's start; it is ready in ~50 ms when idle.
	nginxStart = 10 * time.Second
	// nginxQuitWait is how long stop waits after SIGQUIT before SIGKILL.
	nginxQuitWait = 3 * time.Second
	// nginxModules holds Debian's dynamic nginx modules (ndk, lua).
	nginxModules = "/usr/lib/nginx/modules"
)

// wrkScript makes every request a different URL, so the hash and ringman
// configs spread it over the three backends and no answer is reused.
const wrkScript = `
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
request = function()
  return wrk.format(nil, "/item/" .. math.random(1, 100000000))
end
`

// builtinConf is the frame of the configs that use nginx alone: the same
// process and logging settings as nginx/lua.conf, so only the routing differs.
const builtinConf = `worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log notice;
events {
    worker_connections 1024;
}
http {
    access_log logs/access.log;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    upstream backends {
@UPSTREAM@
        keepalive 64;
        keepalive_timeout 60s;
    }
    server {
        listen @LISTEN@;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_connect_timeout 1s;
            proxy_read_timeout 30s;
        }
    }
}
`

type nginxConfig struct {
	name string // row label
	conf string // nginx.conf with @PLACEHOLDERS@
}

type wrkResult struct {
	rps, p50, p99 float64 // req/s, seconds
}

func nginxRows(ctx context.Context, o options, dir string, cl *cleanups) ([]row, error) {
	bin, err := nginxPath()
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		return nil, errors.New("wrk is not installed: apt-get install wrk (or `make bench-deps`)")
	}
	for _, m := range []string{"ndk_http_module.so", "ngx_http_lua_module.so"} {
		if _, err := os.Stat(filepath.Join(nginxModules, m)); err != nil {
			return nil, fmt.Errorf("nginx's Lua module is not installed (%s missing): apt-get install libnginx-mod-http-lua (or `make bench-deps`)", m)
		}
	}
	root, err := cluster.ModuleRoot()
	if err != nil {
		return nil, err
	}
	confDir := filepath.Join(root, "nginx")

	// Three backends, one per ringman node.
	var backends []string
	for range 3 {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok\n")
		}), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		cl.add(func() { srv.Close() })
		backends = append(backends, ln.Addr().String())
	}

	cdir := filepath.Join(dir, "ringman")
	if err := os.MkdirAll(cdir, 0o755); err != nil {
		return nil, err
	}
	c := cluster.New(o.bin, cdir)
	cl.add(c.Kill)
	defer c.Kill()
	var nodes []*cluster.Node
	for i, b := range backends {
		cfg := cluster.NodeConfig{Name: fmt.Sprintf("n%d", i+1), Services: []string{"web=" + b}}
		if i > 0 {
			cfg.Join = []string{nodes[0].GossipAddr}
		}
		n, err := c.Start(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("start ringman %s: %w\n%s", cfg.Name, err, c.Logs())
		}
		nodes = append(nodes, n)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err = cluster.WaitInstances(wctx, nodes, backends)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, c.Logs())
	}

	luaConf, err := os.ReadFile(filepath.Join(confDir, "lua.conf"))
	if err != nil {
		return nil, err
	}
	authConf, err := os.ReadFile(filepath.Join(confDir, "auth_request.conf"))
	if err != nil {
		return nil, err
	}
	luaModule, err := os.ReadFile(filepath.Join(confDir, "ringman.lua"))
	if err != nil {
		return nil, err
	}
	var hashServers strings.Builder
	hashServers.WriteString("        hash $request_uri consistent;\n")
	for _, b := range backends {
		fmt.Fprintf(&hashServers, "        server %s;\n", b)
	}
	configs := []nginxConfig{
		{"static proxy_pass", strings.Replace(builtinConf, "@UPSTREAM@", "        server "+backends[0]+";", 1)},
		{"built-in hash", strings.Replace(builtinConf, "@UPSTREAM@", strings.TrimRight(hashServers.String(), "\n"), 1)},
		{"ringman lua.conf", string(luaConf)},
		{"ringman auth_request.conf", string(authConf)},
	}
	vars := map[string]string{
		"RINGMAN_RESP": nodes[0].RESPAddr,
		"RINGMAN_HTTP": nodes[0].HTTPAddr,
	}

	procs := make([]*nginxRun, len(configs))
	for i, cfg := range configs {
		p, err := startNginxRun(ctx, bin, filepath.Join(dir, fmt.Sprintf("nginx%d", i)), cfg.conf, vars, luaModule)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.name, err)
		}
		cl.add(p.stop)
		defer p.stop()
		procs[i] = p
		// Every config must route to a backend before it is measured.
		if err := checkRoute(ctx, p.addr); err != nil {
			return nil, fmt.Errorf("%s: %w\n%s", cfg.name, err, p.logs())
		}
	}

	script := filepath.Join(dir, "urls.lua")
	if err := os.WriteFile(script, []byte(wrkScript), 0o644); err != nil {
		return nil, err
	}
	results := make([][]wrkResult, len(configs))
	for round := range o.rounds {
		for i, cfg := range configs {
			r, err := runWrk(ctx, script, procs[i].addr)
			if err != nil {
				return nil, fmt.Errorf("%s, round %d: %w\n%s", cfg.name, round+1, err, procs[i].logs())
			}
			progress("nginx: round %d: %-26s %8.0f req/s  p50 %s  p99 %s", round+1, cfg.name, r.rps, fmtLatency(r.p50), fmtLatency(r.p99))
			results[i] = append(results[i], r)
		}
	}

	med := make([]wrkResult, len(configs))
	for i, rs := range results {
		var rps, p50, p99 []float64
		for _, r := range rs {
			rps, p50, p99 = append(rps, r.rps), append(p50, r.p50), append(p99, r.p99)
		}
		med[i] = wrkResult{median(rps), median(p50), median(p99)}
	}
	const hash = 1
	load := fmt.Sprintf("wrk -t%d -c%d -d%v, median of %d", wrkThreads, wrkConnections, wrkDuration, o.rounds)
	var rows []row
	for i, cfg := range configs {
		r := row{
			measurement: fmt.Sprintf("nginx %s: req/s (%s)", cfg.name, load),
			ringman:     fmt.Sprintf("%.0f", med[i].rps),
		}
		if i > hash {
			ratio := med[i].rps / med[hash].rps
			r.peer = fmt.Sprintf("%.0f (built-in hash)", med[hash].rps)
			r.ratio = fmt.Sprintf("%.2f×", ratio)
			r.goal = fmt.Sprintf("≥ %.1f×", nginxGoal)
			r.met = yesNo(ratio >= nginxGoal)
		}
		rows = append(rows, r)
		rows = append(rows, row{
			measurement: fmt.Sprintf("nginx %s: latency p50 / p99", cfg.name),
			ringman:     fmtLatency(med[i].p50) + " / " + fmtLatency(med[i].p99),
		})
	}
	return rows, nil
}

// nginxPath returns the nginx binary: Debian installs it in /usr/sbin,
// which is not in every user's PATH.
func nginxPath() (string, error) {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx", nil
	}
	return "", errors.New("nginx is not installed: apt-get install nginx libnginx-mod-http-lua (or `make bench-deps`)")
}

var placeholderRE = regexp.MustCompile(`@[A-Z_]+@`)

// nginxRun is one unprivileged nginx (master and worker) in its own process
// group, run from its own prefix directory.
type nginxRun struct {
	addr string
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startNginxRun writes conf (placeholders filled, LISTEN on a free port)
// and ringman.lua into a fresh prefix dir and starts nginx from it.
func startNginxRun(ctx context.Context, bin, dir, conf string, vars map[string]string, luaModule []byte) (*nginxRun, error) {
	for _, d := range []string{"lua", "logs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "lua", "ringman.lua"), luaModule, 0o644); err != nil {
		return nil, err
	}
	var lastErr error
	for range 3 {
		port, err := cluster.FreePort()
		if err != nil {
			return nil, err
		}
		v := map[string]string{"LISTEN": fmt.Sprintf("127.0.0.1:%d", port)}
		for k, val := range vars {
			v[k] = val
		}
		out := placeholderRE.ReplaceAllStringFunc(conf, func(m string) string {
			if val, ok := v[m[1:len(m)-1]]; ok {
				return val
			}
			return m
		})
		for _, line := range strings.Split(out, "\n") {
			if code, _, _ := strings.Cut(line, "#"); placeholderRE.MatchString(code) {
				return nil, fmt.Errorf("placeholder left in nginx.conf: %q", strings.TrimSpace(line))
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(out), 0o644); err != nil {
			return nil, err
		}
		p := &nginxRun{addr: v["LISTEN"], dir: dir}
		if lastErr = p.start(ctx, bin); lastErr == nil {
			return p, nil
		}
		if !strings.Contains(lastErr.Error(), "Address already in use") {
			break
		}
	}
	return nil, lastErr
}

func (p *nginxRun) start(ctx context.Context, bin string) error {
	out, err := os.Create(filepath.Join(p.dir, "logs", "stderr.log"))
	if err != nil {
		return err
	}
	defer out.Close()
	p.cmd = exec.Command(bin, "-p", p.dir+"/", "-c", filepath.Join(p.dir, "nginx.conf"), "-e", "stderr", "-g", "daemon off;")
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = cluster.SysProcAttr()
	if err := p.cmd.Start(); err != nil {
		return err
	}
	p.done = make(chan struct{})
	go func() { p.cmd.Wait(); close(p.done) }()
	sctx, cancel := context.WithTimeout(ctx, nginxStart)
	defer cancel()
	exited := false
	err = cluster.Poll(sctx, 10*time.Millisecond, "nginx accepts connections on "+p.addr, func() (bool, string) {
		select {
		case <-p.done:
			exited = true
			return true, ""
		default:
		}
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
	if exited {
		return fmt.Errorf("nginx exited at start (%s):\n%s", p.cmd.ProcessState, p.logs())
	}
	if err != nil {
		p.stop()
		return fmt.Errorf("%w\n%s", err, p.logs())
	}
	return nil
}

// stop asks nginx to quit (SIGQUIT) and kills its process group when it is
// not gone in time, and in any case: a worker of a killed master keeps
// serving. Safe to call more than once.
func (p *nginxRun) stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(syscall.SIGQUIT)
		t := time.NewTimer(nginxQuitWait)
		select {
		case <-p.done:
		case <-t.C:
		}
		t.Stop()
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// logs returns nginx's stderr and the end of its error log.
func (p *nginxRun) logs() string {
	var b strings.Builder
	for _, f := range []string{"stderr.log", "error.log"} {
		raw, _ := os.ReadFile(filepath.Join(p.dir, "logs", f))
		if len(raw) > 4<<10 {
			raw = raw[len(raw)-4<<10:]
		}
		fmt.Fprintf(&b, "--- nginx %s ---\n%s\n", f, raw)
	}
	return b.String()
}

// checkRoute sends a few requests through nginx and wants the backend's 200.
func checkRoute(ctx context.Context, addr string) error {
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	for i := range 5 {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/item/check%d", addr, i), nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
			return fmt.Errorf("GET /item/check%d: status %d, body %q (want a backend's 200)", i, resp.StatusCode, body)
		}
	}
	return nil
}

var (
	wrkRPS     = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkPct     = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s|m)\s*$`)
	wrkNon2xx  = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSockErr = regexp.MustCompile(`(?m)^\s*Socket errors:.*$`)
)

// runWrk runs one wrk against addr and parses its req/s and p50/p99; a run
// with non-2xx answers or socket errors is an error, not a figure.
func runWrk(ctx context.Context, script, addr string) (wrkResult, error) {
	wctx, cancel := context.WithTimeout(ctx, wrkBound)
	defer cancel()
	cmd := groupCommand(wctx, "wrk",
		"-t", strconv.Itoa(wrkThreads), "-c", strconv.Itoa(wrkConnections),
		"-d", fmt.Sprintf("%ds", int(wrkDuration.Seconds())), "--timeout", "5s", "--latency",
		"-s", script, "http://"+addr+"/")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	return parseWrk(string(out))
}

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk: no Requests/sec in its output:\n%s", out)
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	for _, m := range wrkPct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		switch m[3] {
		case "us":
			v /= 1e6
		case "ms":
			v /= 1e3
		case "m":
			v *= 60
		}
		if m[1] == "50" {
			r.p50 = v
		} else {
			r.p99 = v
		}
	}
	if r.p50 == 0 || r.p99 == 0 {
		return r, fmt.Errorf("wrk: no 50%%/99%% latency in its output:\n%s", out)
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		return r, fmt.Errorf("wrk: %s non-2xx answers:\n%s", m[1], out)
	}
	if m := wrkSockErr.FindString(out); m != "" {
		return r, fmt.Errorf("wrk: %s\n%s", strings.TrimSpace(m), out)
	}
	return r, nil
}

func fmtLatency(s float64) string {
	if s < 1e-3 {
		return fmt.Sprintf("%.0f µs", s*1e6)
	}
	return fmt.Sprintf("%.2f ms", s*1e3)
}
