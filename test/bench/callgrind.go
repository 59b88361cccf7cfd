package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"ringman/test/cluster"
	"ringman/test/nginxrun"
)

// The callgrind section: the instructions one nginx executes per request
// with the built-in `hash $request_uri consistent`, lua.conf, module.conf
// and its balancer alone, and with the seed's set_backend form and its
// static-map peer (the same backends, ringman nodes and configs as the nginx section).
// Unlike req/s, an instruction count does not depend on what else runs on
// the machine, so it compares the configs where wrk's figures are noise.
//
// Method: nginx in one process (`master_process off;`) under
// `valgrind --tool=callgrind`; warm-up requests (lazy initialisation, the
// first table, the keepalive pools); then, between a `callgrind_control
// -z` (zero) and a `-d` (dump): first cgIdle with no request, which gives
// what the timers cost per second (the module's stat of its table file,
// lua.conf's RING.TABLE poll), then cgRequests sequential requests over
// one keepalive client connection, each to a different URL. Instructions
// per request = (requests' dump − idle rate × their duration) / cgRequests.
// Start-up and shutdown fall outside both dumps.
const (
	cgRequests = 2000
	cgWarmup   = 200
	cgIdle     = 2 * time.Second
	// cgStart bounds nginx's start under valgrind (LuaJIT, the module's
	// first table): a few seconds when idle.
	cgStart = 60 * time.Second
	// cgQuitWait is how long Stop waits for valgrind to write its last
	// dump and exit after SIGQUIT.
	cgQuitWait = 30 * time.Second
)

var cgTotals = regexp.MustCompile(`(?m)^(?:summary|totals):\s+(\d+)`)

type cgResult struct {
	perRequest float64 // instructions per request, the idle rate taken out
	idleRate   float64 // instructions per second with no request
	elapsed    time.Duration
}

func callgrindRows(ctx context.Context, o options, dir string, cl *cleanups) ([]row, error) {
	valgrind, err := exec.LookPath("valgrind")
	if err != nil {
		return nil, errors.New("valgrind is not installed: apt-get install valgrind (or `make bench-deps`)")
	}
	if _, err := exec.LookPath("callgrind_control"); err != nil {
		return nil, errors.New("callgrind_control is not installed: apt-get install valgrind (or `make bench-deps`)")
	}
	env, stop, err := setupNginx(ctx, dir, o, cl)
	if err != nil {
		return nil, err
	}
	defer stop()

	which := []int{env.hash, env.lua}
	if env.module >= 0 {
		which = append(which, env.module, env.balancer, env.seed, env.seedPeer)
	}
	results := map[int]cgResult{}
	for _, i := range which {
		r, err := callgrindConfig(ctx, env, i, valgrind, filepath.Join(dir, fmt.Sprintf("cg%d", i)), o.callgrindOut, cl)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", env.configs[i].name, err)
		}
		progress("callgrind: %-20s %8.0f instructions/request (idle %.0f/s over %v)", env.configs[i].name, r.perRequest, r.idleRate, r.elapsed.Round(time.Millisecond))
		results[i] = r
	}

	var rows []row
	for _, i := range which {
		r := row{
			measurement: fmt.Sprintf("nginx %s: instructions per request (callgrind, %d requests)", env.configs[i].name, cgRequests),
			ringman:     fmt.Sprintf("%.1fk", results[i].perRequest/1e3),
		}
		// Compared as in the nginx section: with the built-in hash, or
		// set_backend with the static map.
		if cfg := env.configs[i]; cfg.goal != 0 {
			peer := env.hash
			if cfg.peer != 0 {
				peer = cfg.peer
			}
			r.peer = fmt.Sprintf("%.1fk (%s)", results[peer].perRequest/1e3, env.configs[peer].name)
			r.ratio = fmt.Sprintf("%.2f×", results[i].perRequest/results[peer].perRequest)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// callgrindConfig measures configs[i] under callgrind in dir; keep, when
// not "", receives the requests' dump for callgrind_annotate.
func callgrindConfig(ctx context.Context, env *nginxEnv, i int, valgrind, dir, keep string, cl *cleanups) (cgResult, error) {
	var res cgResult
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	// nginxrun runs Bin with nginx's arguments: a wrapper puts valgrind in
	// front, and exec keeps the pid, so signals and callgrind_control reach
	// the process being measured.
	wrapper := filepath.Join(dir, "valgrind-nginx")
	script := fmt.Sprintf("#!/bin/sh\nexec %s --tool=callgrind --callgrind-out-file=%s --log-file=%s %s \"$@\"\n",
		valgrind, filepath.Join(dir, "callgrind.out.%p"), filepath.Join(dir, "valgrind.log"), env.bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		return res, err
	}
	p, err := nginxrun.Start(ctx, nginxrun.Config{
		Bin:          wrapper,
		Dir:          dir,
		Conf:         "master_process off;\n" + env.configs[i].conf,
		Vars:         env.vars,
		ReadyTimeout: cgStart,
		QuitWait:     cgQuitWait,
		LogTail:      nginxLogTail,
	})
	if err != nil {
		return res, err
	}
	cl.add(p.Stop)
	defer p.Stop()
	// nginx listens before it writes its pid file.
	var pid string
	wctx, cancel := context.WithTimeout(ctx, cgStart)
	err = cluster.Poll(wctx, 20*time.Millisecond, "nginx writes its pid file", func() (bool, string) {
		raw, err := os.ReadFile(filepath.Join(dir, "logs", "nginx.pid"))
		pid = strings.TrimSpace(string(raw))
		return err == nil && pid != "", fmt.Sprint(err)
	})
	cancel()
	if err != nil {
		return res, err
	}

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	get := func(n int, prefix string) error {
		for k := range n {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/item/%s%d", p.Addr, prefix, k), nil)
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
				return fmt.Errorf("GET /item/%s%d: status %d, body %q (want a backend's 200)\n%s", prefix, k, resp.StatusCode, body, p.Logs())
			}
		}
		return nil
	}
	// measure returns the instructions of what runs between a zero and a
	// dump, and how long that took.
	measure := func(what func() error) (float64, time.Duration, string, error) {
		if err := callgrindControl(ctx, "-z", pid); err != nil {
			return 0, 0, "", err
		}
		t0 := time.Now()
		if err := what(); err != nil {
			return 0, 0, "", err
		}
		if err := callgrindControl(ctx, "-d", pid); err != nil {
			return 0, 0, "", err
		}
		elapsed := time.Since(t0)
		file, ir, err := lastDump(dir, pid)
		return ir, elapsed, file, err
	}

	if err := get(cgWarmup, "warm"); err != nil {
		return res, err
	}
	idleIr, idleT, _, err := measure(func() error {
		select {
		case <-time.After(cgIdle):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	if err != nil {
		return res, err
	}
	ir, t, file, err := measure(func() error { return get(cgRequests, "cg") })
	if err != nil {
		return res, err
	}
	res.idleRate = idleIr / idleT.Seconds()
	res.elapsed = t
	res.perRequest = (ir - res.idleRate*t.Seconds()) / cgRequests
	if keep != "" {
		if err := os.MkdirAll(keep, 0o755); err != nil {
			return res, err
		}
		name := strings.NewReplacer(" ", "_", ",", "", "=", "_").Replace(env.configs[i].name)
		if raw, err := os.ReadFile(file); err != nil {
			return res, err
		} else if err := os.WriteFile(filepath.Join(keep, "callgrind.out."+name), raw, 0o644); err != nil {
			return res, err
		}
	}
	return res, nil
}

func callgrindControl(ctx context.Context, flag, pid string) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, "callgrind_control", flag, pid).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK") {
		return fmt.Errorf("callgrind_control %s %s: %v\n%s", flag, pid, err, out)
	}
	return nil
}

// lastDump returns the newest numbered dump of pid in dir and its total.
func lastDump(dir, pid string) (string, float64, error) {
	files, err := filepath.Glob(filepath.Join(dir, "callgrind.out."+pid+".*"))
	if err != nil || len(files) == 0 {
		return "", 0, fmt.Errorf("no callgrind dump in %s (%v)", dir, err)
	}
	num := func(f string) int {
		n, _ := strconv.Atoi(f[strings.LastIndexByte(f, '.')+1:])
		return n
	}
	sort.Slice(files, func(a, b int) bool { return num(files[a]) < num(files[b]) })
	file := files[len(files)-1]
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", 0, err
	}
	m := cgTotals.FindSubmatch(raw)
	if m == nil {
		return "", 0, fmt.Errorf("%s: no summary or totals line", file)
	}
	ir, _ := strconv.ParseFloat(string(m[1]), 64)
	return file, ir, nil
}
