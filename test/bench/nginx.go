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
	"time"

	"ringman/test/cluster"
	"ringman/test/nginxrun"
)

// The nginx section: wrk against nginx on this machine, with three real
// `ringman serve` nodes each advertising one in-process Go HTTP backend.
// The configs, all with one worker and the same backends:
//
//   - static: proxy_pass to one backend (upstream keepalive);
//   - hash: nginx's built-in `hash $request_uri consistent` over the three
//     backends (upstream keepalive 64): the peer of the ringman configs;
//   - lua: ringman's nginx/lua.conf (answers from each worker's copy of
//     RING.TABLE), and the same with mode = "lookup" (a RESP lookup per
//     request);
//   - auth_request: ringman's nginx/auth_request.conf (an HTTP subrequest
//     per request, no backend keepalive);
//   - module (when bin/ngx_http_ringman_module.so is built): module.conf
//     (set_backend, then ringman_hash under keepalive 64, like the hash),
//     the same with the balancer alone (no set_backend), and the seed's
//     `set_backend $backend; proxy_pass http://$backend$request_uri;`
//     against the same shape with a static map (no upstream keepalive in
//     either).
//
// On a 2-core machine shared with other jobs, req/s moves by tens of
// percent from one run to the next. So the runs are short and many
// (nginxRounds rounds of wrkDuration), every config once per round, the
// order reversed every other round (ABC..CBA: a drift in the machine's
// load favours none), and a config is compared with its peer by the
// median of the per-round ratios, each from two runs seconds apart.
// Beside req/s, the nginx worker's CPU time per request (its CPU time
// from /proc over the run, divided by the requests wrk counted): what
// nginx spent, which the neighbours move much less than what it managed.
//
// Goals: each Lua or auth_request config at ≥ 0.9× the built-in hash's
// req/s; the native module at ≥ 1.0× its peer (the built-in hash; for
// set_backend, the static map of the same shape), with a p99 at most 0.1 ms
// above the peer's.
const (
	nginxGoal     = 0.9
	moduleGoal    = 1.0
	moduleP99Goal = 0.1e-3 // seconds
	// wrk's load: 2 threads, 50 connections, nginxRounds runs of
	// wrkDuration per config (10 configs: about 2.5 minutes in all).
	wrkThreads     = 2
	wrkConnections = 50
	wrkDuration    = time.Second
	nginxRounds    = 13
	// wrkBound bounds one wrk run (its duration plus start and report).
	wrkBound = wrkDuration + 15*time.Second
	// nginxStart bounds nginx's start; it is ready in ~50 ms when idle.
	nginxStart = 10 * time.Second
	// nginxQuitWait is how long stop waits after SIGQUIT before SIGKILL.
	nginxQuitWait = 3 * time.Second
	// nginxLogTail is how much of each nginx log an error shows.
	nginxLogTail = 4 << 10
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

// luaFloorConf is nginx/lua.conf's fast path without ringman: a
// balancer_by_lua that picks one of the backends by the crc32 of
// $ringman_key, with the same upstream keepalive. It measures what the Lua
// module's balancer phase costs by itself, so that lua.conf's ratio to it
// is ringman's own share.
const luaFloorConf = `worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log notice;
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
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
    init_by_lua_block {
        floor_peers = { @PEERS@ }
    }
    upstream backends {
        server 0.0.0.1;
        balancer_by_lua_block {
            local b = require "ngx.balancer"
            local p = floor_peers[ngx.crc32_short(ngx.var.ringman_key) % #floor_peers + 1]
            b.set_more_tries(2)
            b.set_current_peer(p[1], p[2])
        }
        keepalive 64;
        keepalive_timeout 60s;
    }
    server {
        listen @LISTEN@;
        location / {
            set $ringman_key $host$uri;
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
	name string  // row label
	conf string  // nginx.conf with @PLACEHOLDERS@
	goal float64 // a ringman config: its req/s ratio to its peer must reach this
	peer int     // index of the config it is compared with; 0: the built-in hash
	p99  bool    // its p99 is compared with its peer's (moduleP99Goal)
}

type wrkResult struct {
	rps, p50, p99 float64 // req/s, seconds
	requests      float64 // answered in the run
	cpu           float64 // nginx workers' CPU seconds per request
}

// nginxEnv is what the nginx and callgrind sections measure through: three
// backends, three ringman nodes advertising them, and the configs.
type nginxEnv struct {
	bin      string   // nginx
	backends []string // host:port of the Go backends
	vars     map[string]string
	configs  []nginxConfig
	// Indexes into configs; -1 when absent (the module is not built).
	hash, floor, lua, module, balancer, seed, seedPeer int
}

// variableConf is the frame of the proxy_pass-to-a-variable configs: the
// seed's `set_backend $backend; proxy_pass http://$backend$request_uri;`
// and its peer with the same shape and a static map. No upstream, so no
// backend keepalive in either (nginx speaks HTTP/1.0 to the backend and
// opens a connection per request).
const variableConf = `worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log notice;
@LOAD@
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
@HTTP@
    server {
        listen @LISTEN@;
        location / {
@LOCATION@
            proxy_pass http://$backend$request_uri;
            proxy_set_header Host $host;
            proxy_connect_timeout 1s;
            proxy_read_timeout 30s;
        }
    }
}
`

func fillVariableConf(load, http, location string) string {
	return strings.NewReplacer("@LOAD@", load, "@HTTP@", http, "@LOCATION@", location).Replace(variableConf)
}

// setupNginx starts the backends and the ringman nodes and prepares the
// configs; stop ends the nodes (cl does too, on an early exit).
func setupNginx(ctx context.Context, dir string, o options, cl *cleanups) (env *nginxEnv, stop func(), err error) {
	bin, err := nginxrun.Binary()
	if err != nil {
		return nil, nil, errors.New("nginx is not installed: apt-get install nginx libnginx-mod-http-lua (or `make bench-deps`)")
	}
	if m := nginxrun.MissingLuaModule(); m != "" {
		return nil, nil, fmt.Errorf("nginx's Lua module is not installed (%s missing): apt-get install libnginx-mod-http-lua (or `make bench-deps`)", m)
	}
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()

	// Three backends, one per ringman node.
	var backends []string
	for range 3 {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok\n")
		}), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		cl.add(func() { srv.Close() })
		stops = append(stops, func() { srv.Close() })
		backends = append(backends, ln.Addr().String())
	}

	cdir := filepath.Join(dir, "ringman")
	if err := os.MkdirAll(cdir, 0o755); err != nil {
		return nil, nil, err
	}
	c := cluster.New(o.bin, cdir)
	cl.add(c.Kill)
	stops = append(stops, c.Kill)
	// The first node also writes table files for the native module, in a
	// directory nginx's workers (nobody, when run as root) can read.
	tables, err := os.MkdirTemp("", "ringman-bench-tables-")
	if err != nil {
		return nil, nil, err
	}
	cl.add(func() { os.RemoveAll(tables) })
	stops = append(stops, func() { os.RemoveAll(tables) })
	if err := os.Chmod(tables, 0o755); err != nil {
		return nil, nil, err
	}
	var nodes []*cluster.Node
	for i, b := range backends {
		cfg := cluster.NodeConfig{Name: fmt.Sprintf("n%d", i+1), Services: []string{"web=" + b}}
		if i > 0 {
			cfg.Join = []string{nodes[0].GossipAddr}
		} else {
			cfg.Args = []string{"--table-dir", filepath.Join(tables, "n1")}
		}
		n, err := c.Start(ctx, cfg)
		if err != nil {
			return nil, nil, fmt.Errorf("start ringman %s: %w\n%s", cfg.Name, err, c.Logs())
		}
		nodes = append(nodes, n)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err = cluster.WaitInstances(wctx, nodes, backends)
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("%w\n%s", err, c.Logs())
	}

	luaConf, err := nginxrun.ReadConfig("lua.conf")
	if err != nil {
		return nil, nil, err
	}
	authConf, err := nginxrun.ReadConfig("auth_request.conf")
	if err != nil {
		return nil, nil, err
	}
	var hashServers strings.Builder
	hashServers.WriteString("        hash $request_uri consistent;\n")
	for _, b := range backends {
		fmt.Fprintf(&hashServers, "        server %s;\n", b)
	}
	const tableMode = `mode = "table",`
	if !strings.Contains(luaConf, tableMode) {
		return nil, nil, fmt.Errorf("nginx/lua.conf has no %q to switch to the lookup mode", tableMode)
	}
	// mode=lookup as the README sets it up: every request on the slow path
	// (route() + balance()), without first trying pick().
	const fastPath = "proxy_pass http://ringman_backend;"
	if !strings.Contains(luaConf, fastPath) {
		return nil, nil, fmt.Errorf("nginx/lua.conf has no %q to switch to the slow path", fastPath)
	}
	lookupConf := strings.Replace(strings.Replace(luaConf, tableMode, `mode = "lookup",`, 1), fastPath,
		`access_by_lua_block { require("ringman").route(ngx.var.ringman_key) }
            proxy_pass http://ringman_routed;`, 1)
	env = &nginxEnv{bin: bin, backends: backends, hash: 1, floor: 2, lua: 3, module: -1, balancer: -1, seed: -1, seedPeer: -1}
	env.configs = []nginxConfig{
		{name: "static proxy_pass", conf: strings.Replace(builtinConf, "@UPSTREAM@", "        server "+backends[0]+";", 1)},
		{name: "built-in hash", conf: strings.Replace(builtinConf, "@UPSTREAM@", strings.TrimRight(hashServers.String(), "\n"), 1)},
		{name: "Lua floor (no lookup)", conf: strings.Replace(luaFloorConf, "@PEERS@", luaPeers(backends), 1)},
		{name: "ringman lua.conf", conf: luaConf, goal: nginxGoal},
		{name: "ringman lua.conf, mode=lookup", conf: lookupConf, goal: nginxGoal},
		{name: "ringman auth_request.conf", conf: authConf, goal: nginxGoal},
	}
	env.vars = map[string]string{
		"RINGMAN_RESP":   nodes[0].RESPAddr,
		"RINGMAN_HTTP":   nodes[0].HTTPAddr,
		"RINGMAN_TABLES": filepath.Join(tables, "n1"),
	}
	// The native module, when it is built (`make bench` builds it).
	if root, err := cluster.ModuleRoot(); err == nil {
		so := filepath.Join(root, "bin", "ngx_http_ringman_module.so")
		if _, err := os.Stat(so); err != nil {
			progress("nginx: module.conf not measured: %s is missing (make nginx-module)", so)
		} else if moduleConf, err := nginxrun.ReadConfig("module.conf"); err != nil {
			return nil, nil, err
		} else {
			env.vars["MODULE"] = so
			env.module = len(env.configs)
			env.configs = append(env.configs, nginxConfig{name: "ringman module.conf", conf: moduleConf, goal: moduleGoal, p99: true})
			// The balancer alone: module.conf without set_backend.
			const setBackend = "set_backend $ringman_owner;"
			if !strings.Contains(moduleConf, setBackend) {
				return nil, nil, fmt.Errorf("nginx/module.conf has no %q to measure the balancer alone", setBackend)
			}
			env.balancer = len(env.configs)
			env.configs = append(env.configs, nginxConfig{name: "module balancer alone", conf: strings.Replace(moduleConf, setBackend, "", 1), goal: moduleGoal, p99: true})
			// The seed's form against the same shape with a static map:
			// both proxy_pass to a variable, without backend keepalive.
			env.seed = len(env.configs)
			env.configs = append(env.configs, nginxConfig{name: "module set_backend (seed form)", conf: fillVariableConf(
				"load_module @MODULE@;",
				"    ringman_table_dir @RINGMAN_TABLES@;\n    ringman_refresh 100ms;\n    ringman_max_stale 30s;\n    ringman_service web;",
				"            set_backend $backend;"), peer: len(env.configs) + 1, goal: moduleGoal, p99: true})
			env.seedPeer = len(env.configs)
			env.configs = append(env.configs, nginxConfig{name: "static map + proxy_pass $backend", conf: fillVariableConf(
				"", "    map $uri $backend {\n        default "+backends[0]+";\n    }", "")})
			// The node writes its first table just after it is ready.
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := cluster.Poll(wctx, 20*time.Millisecond, "node n1 writes its table file", func() (bool, string) {
				_, err := os.Stat(filepath.Join(tables, "n1", "web.table"))
				return err == nil, fmt.Sprint(err)
			})
			cancel()
			if err != nil {
				return nil, nil, err
			}
		}
	}
	return env, stop, nil
}

func nginxRows(ctx context.Context, o options, dir string, cl *cleanups) ([]row, error) {
	if _, err := exec.LookPath("wrk"); err != nil {
		return nil, errors.New("wrk is not installed: apt-get install wrk (or `make bench-deps`)")
	}
	env, stop, err := setupNginx(ctx, dir, o, cl)
	if err != nil {
		return nil, err
	}
	defer stop()
	configs := env.configs

	procs := make([]*nginxrun.Nginx, len(configs))
	for i, cfg := range configs {
		p, err := nginxrun.Start(ctx, nginxrun.Config{
			Bin:          env.bin,
			Dir:          filepath.Join(dir, fmt.Sprintf("nginx%d", i)),
			Conf:         cfg.conf,
			Vars:         env.vars,
			ReadyTimeout: nginxStart,
			QuitWait:     nginxQuitWait,
			LogTail:      nginxLogTail,
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.name, err)
		}
		cl.add(p.Stop)
		defer p.Stop()
		procs[i] = p
		// Every config must route to a backend before it is measured.
		if err := checkRoute(ctx, p.Addr); err != nil {
			return nil, fmt.Errorf("%s: %w\n%s", cfg.name, err, p.Logs())
		}
	}

	// The workers' pids, for their CPU time: the master's children.
	workers := make([][]int, len(configs))
	for i, p := range procs {
		if workers[i], err = nginxWorkers(p.Dir); err != nil {
			return nil, fmt.Errorf("%s: %w", configs[i].name, err)
		}
	}

	script := filepath.Join(dir, "urls.lua")
	if err := os.WriteFile(script, []byte(wrkScript), 0o644); err != nil {
		return nil, err
	}
	// Each compared pair runs back to back: the built-in hash between the
	// module's two forms, the static map beside set_backend.
	var order []int
	for i := range configs {
		switch i {
		case env.hash, env.module, env.balancer, env.seed, env.seedPeer:
		default:
			order = append(order, i)
		}
	}
	for _, i := range []int{env.balancer, env.hash, env.module, env.seedPeer, env.seed} {
		if i >= 0 {
			order = append(order, i)
		}
	}
	results := make([][]wrkResult, len(configs))
	// A config that fails a round is left out of the later ones and gets
	// an ERROR row; the others are still measured. Only the built-in hash,
	// every config's peer, ends the section.
	failed := make([]error, len(configs))
	for round := range nginxRounds {
		for k := range order {
			i := order[k]
			if round%2 == 1 {
				i = order[len(order)-1-k]
			}
			cfg := configs[i]
			if failed[i] != nil {
				continue
			}
			r, err := runWrkCPU(ctx, script, procs[i].Addr, workers[i])
			if err != nil && i != env.hash && ctx.Err() == nil {
				failed[i] = fmt.Errorf("round %d: %w", round+1, err)
				progress("nginx: %s failed in round %d, left out of the rest: %v\n%s", cfg.name, round+1, err, procs[i].Logs())
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("%s, round %d: %w\n%s", cfg.name, round+1, err, procs[i].Logs())
			}
			progress("nginx: round %d: %-33s %8.0f req/s  p50 %s  p99 %s  CPU %.1f µs/request", round+1, cfg.name, r.rps, fmtLatency(r.p50), fmtLatency(r.p99), r.cpu*1e6)
			results[i] = append(results[i], r)
		}
	}
	return nginxTable(env, results, failed), nil
}

// nginxTable turns each config's runs (one per round) into rows: medians,
// and for a config with a goal, the medians of its per-round ratios to its
// peer.
//
// failed[i] is why config i stopped being measured (nil: it was not): it,
// and any config compared with it, get one ERROR row instead.
func nginxTable(env *nginxEnv, results [][]wrkResult, failed []error) []row {
	configs := env.configs
	broken := func(i int) error {
		if failed[i] != nil {
			return failed[i]
		}
		if p := configs[i].peer; p != 0 && failed[p] != nil {
			return fmt.Errorf("its peer %s failed: %w", configs[p].name, failed[p])
		}
		return nil
	}
	field := func(rs []wrkResult, f func(wrkResult) float64) float64 {
		var xs []float64
		for _, r := range rs {
			xs = append(xs, f(r))
		}
		return median(xs)
	}
	perRound := func(a, b []wrkResult, f func(x, y wrkResult) float64) float64 {
		var xs []float64
		for k := range min(len(a), len(b)) {
			xs = append(xs, f(a[k], b[k]))
		}
		return median(xs)
	}
	rps := func(r wrkResult) float64 { return r.rps }
	load := fmt.Sprintf("wrk -t%d -c%d -d%v, %d rounds", wrkThreads, wrkConnections, wrkDuration, len(results[env.hash]))
	var rows []row
	for i, cfg := range configs {
		rs := results[i]
		peer := env.hash
		if cfg.peer != 0 {
			peer = cfg.peer
		}
		ps := results[peer]
		if err := broken(i); err != nil {
			rows = append(rows, row{measurement: fmt.Sprintf("nginx %s", cfg.name), ringman: firstLine(err.Error()), met: "ERROR"})
			continue
		}
		r := row{
			measurement: fmt.Sprintf("nginx %s: req/s (%s, median)", cfg.name, load),
			ringman:     fmt.Sprintf("%.0f", field(rs, rps)),
		}
		if i != peer {
			ratio := perRound(rs, ps, func(x, y wrkResult) float64 { return x.rps / y.rps })
			r.peer = fmt.Sprintf("%.0f (%s)", field(ps, rps), configs[peer].name)
			r.ratio = fmt.Sprintf("%.2f×", ratio)
			if cfg.goal != 0 {
				r.goal = fmt.Sprintf("≥ %.1f×", cfg.goal)
				r.met = yesNo(ratio >= cfg.goal)
			}
		}
		rows = append(rows, r)
		lat := row{
			measurement: fmt.Sprintf("nginx %s: latency p50 / p99", cfg.name),
			ringman: fmtLatency(field(rs, func(r wrkResult) float64 { return r.p50 })) + " / " +
				fmtLatency(field(rs, func(r wrkResult) float64 { return r.p99 })),
		}
		if i != peer {
			d := perRound(rs, ps, func(x, y wrkResult) float64 { return x.p99 - y.p99 })
			lat.peer = fmt.Sprintf("p99 %s (%s)", fmtLatency(field(ps, func(r wrkResult) float64 { return r.p99 })), configs[peer].name)
			lat.ratio = fmt.Sprintf("p99 %+.2f ms", d*1e3)
			if cfg.p99 {
				lat.goal = fmt.Sprintf("≤ %+.1f ms", moduleP99Goal*1e3)
				lat.met = yesNo(d <= moduleP99Goal)
			}
		}
		rows = append(rows, lat)
		cpu := row{
			measurement: fmt.Sprintf("nginx %s: worker CPU per request", cfg.name),
			ringman:     fmt.Sprintf("%.1f µs", field(rs, func(r wrkResult) float64 { return r.cpu })*1e6),
		}
		if i != peer {
			cpu.peer = fmt.Sprintf("%.1f µs (%s)", field(ps, func(r wrkResult) float64 { return r.cpu })*1e6, configs[peer].name)
			cpu.ratio = fmt.Sprintf("%.2f×", perRound(rs, ps, func(x, y wrkResult) float64 { return x.cpu / y.cpu }))
		}
		rows = append(rows, cpu)
	}
	// What ringman itself costs in lua.conf, apart from the Lua module's
	// phases: lua.conf against the same shape with no lookup.
	if broken(env.lua) == nil && broken(env.floor) == nil {
		rows = append(rows, row{
			measurement: "nginx ringman lua.conf vs Lua floor: req/s",
			ringman:     fmt.Sprintf("%.0f", field(results[env.lua], rps)),
			peer:        fmt.Sprintf("%.0f (Lua floor)", field(results[env.floor], rps)),
			ratio:       fmt.Sprintf("%.2f×", perRound(results[env.lua], results[env.floor], func(x, y wrkResult) float64 { return x.rps / y.rps })),
		})
	}
	// The module's comparisons round by round, so that their spread is
	// visible on a noisy machine.
	for _, i := range []int{env.module, env.balancer, env.seed} {
		if i < 0 || broken(i) != nil {
			continue
		}
		peer := env.hash
		if configs[i].peer != 0 {
			peer = configs[i].peer
		}
		var per []string
		for k := range min(len(results[i]), len(results[peer])) {
			per = append(per, fmt.Sprintf("%.2f/%.2f", results[i][k].rps/results[peer][k].rps, results[i][k].cpu/results[peer][k].cpu))
		}
		rows = append(rows, row{
			measurement: fmt.Sprintf("nginx %s / %s, each round: req/s / CPU per request", configs[i].name, configs[peer].name),
			ringman:     strings.Join(per, " "),
		})
	}
	return rows
}

// nginxWorkers returns the pids of the workers of the nginx whose prefix
// is dir (its master's children; the config's pid file is logs/nginx.pid).
func nginxWorkers(dir string) ([]int, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "logs", "nginx.pid"))
	if err != nil {
		return nil, fmt.Errorf("nginx's pid file: %w", err)
	}
	master, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("nginx's pid file: %q: %w", raw, err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := procStat(pid); err == nil && st.ppid == master {
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("no worker of nginx master %d in /proc", master)
	}
	return pids, nil
}

type procStatus struct {
	ppid int
	cpu  time.Duration // utime + stime
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on
// every Linux architecture Go runs on.
const clockTicks = 100

// procStat reads /proc/<pid>/stat: its parent and CPU time so far.
func procStat(pid int) (procStatus, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStatus{}, err
	}
	return parseProcStat(string(raw))
}

// parseProcStat parses a /proc/<pid>/stat line. The command (field 2) is
// in parentheses and may hold spaces or parentheses: the fields that
// follow start after its last ')'.
func parseProcStat(line string) (procStatus, error) {
	end := strings.LastIndexByte(line, ')')
	if end < 0 {
		return procStatus{}, fmt.Errorf("/proc stat line without a command: %q", line)
	}
	f := strings.Fields(line[end+1:])
	// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return procStatus{}, fmt.Errorf("/proc stat line with %d fields: %q", len(f)+2, line)
	}
	ppid, err1 := strconv.Atoi(f[1])
	utime, err2 := strconv.ParseInt(f[11], 10, 64)
	stime, err3 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return procStatus{}, fmt.Errorf("/proc stat line %q: %w", line, err)
	}
	return procStatus{ppid: ppid, cpu: time.Duration(utime+stime) * time.Second / clockTicks}, nil
}

// workersCPU is the CPU time the workers used so far: from
// /proc/<pid>/schedstat (nanoseconds) where the kernel has it, else
// utime + stime from /proc/<pid>/stat (10 ms ticks, ~2% of a 1 s run).
func workersCPU(pids []int) (time.Duration, error) {
	var sum time.Duration
	for _, pid := range pids {
		if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid)); err == nil {
			if f := strings.Fields(string(raw)); len(f) > 0 {
				if ns, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					sum += time.Duration(ns)
					continue
				}
			}
		}
		st, err := procStat(pid)
		if err != nil {
			return 0, fmt.Errorf("nginx worker %d: %w", pid, err)
		}
		sum += st.cpu
	}
	return sum, nil
}

// runWrkCPU is runWrk with the workers' CPU time per request over the run.
func runWrkCPU(ctx context.Context, script, addr string, workers []int) (wrkResult, error) {
	before, err := workersCPU(workers)
	if err != nil {
		return wrkResult{}, err
	}
	r, err := runWrk(ctx, script, addr)
	if err != nil {
		return r, err
	}
	after, err := workersCPU(workers)
	if err != nil {
		return r, err
	}
	r.cpu = (after - before).Seconds() / r.requests
	return r, nil
}

// luaPeers renders backends as a Lua list of {ip, port} pairs.
func luaPeers(backends []string) string {
	var out []string
	for _, b := range backends {
		host, port, _ := net.SplitHostPort(b)
		out = append(out, fmt.Sprintf("{%q, %s}", host, port))
	}
	return strings.Join(out, ", ")
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
	wrkCount   = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
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
	if m := wrkCount.FindStringSubmatch(out); m != nil {
		r.requests, _ = strconv.ParseFloat(m[1], 64)
	}
	if r.requests == 0 {
		return r, fmt.Errorf("wrk: no request count (\"N requests in\") in its output:\n%s", out)
	}
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
