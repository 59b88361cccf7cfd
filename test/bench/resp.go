package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"ringman/test/cluster"
)

// benchKey is the key redis-benchmark's GET test sends when -r is not
// given (it expands __rand_int__ only with -r): every GET hits it.
const benchKey = "key:__rand_int__"

// respTarget is one server redis-benchmark is pointed at.
type respTarget struct {
	name string
	addr string
}

// respRows compares RESP GET throughput of ringman (one node, one instance)
// with redis-server (one key), unpipelined and pipelined. ringman runs twice:
// with Go's default GOMAXPROCS and with GOMAXPROCS=1, because on a 2-core
// machine the server and the single-threaded benchmark client fight over
// cores (FINDINGS.md). Runs alternate between servers; the figures are medians.
func respRows(ctx context.Context, o options, dir string, cl *cleanups) ([]row, error) {
	for _, tool := range []string{"redis-server", "redis-benchmark"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is not installed (make bench-deps installs it): %w", tool, err)
		}
	}
	c := cluster.New(o.bin, dir)
	cl.add(c.Kill)
	defer c.Close()
	port, err := cluster.FreePort()
	if err != nil {
		return nil, err
	}
	instance := "127.0.0.1:" + strconv.Itoa(port)
	progress("resp: starting ringman (default GOMAXPROCS and GOMAXPROCS=1) and redis-server")
	node, err := c.Start(ctx, cluster.NodeConfig{Name: "resp", Services: []string{"web=" + instance}})
	if err != nil {
		return nil, err
	}
	node1, err := c.Start(ctx, cluster.NodeConfig{Name: "resp-gomaxprocs1", Services: []string{"web=" + instance}, Env: []string{"GOMAXPROCS=1"}})
	if err != nil {
		return nil, err
	}
	rs, err := startRedis(ctx, dir, cl)
	if err != nil {
		return nil, err
	}
	defer rs.stop()

	// The same reply on both sides: a bulk string of the same length.
	rdb := redis.NewClient(&redis.Options{Addr: rs.addr})
	defer rdb.Close()
	if err := rdb.Set(ctx, benchKey, instance, 0).Err(); err != nil {
		return nil, fmt.Errorf("redis-server SET: %w", err)
	}
	targets := []respTarget{{"redis-server", rs.addr}, {"ringman", node.RESPAddr}, {"ringman GOMAXPROCS=1", node1.RESPAddr}}
	for _, t := range targets {
		c := redis.NewClient(&redis.Options{Addr: t.addr})
		got, err := c.Get(ctx, benchKey).Result()
		c.Close()
		if err != nil || got != instance {
			return nil, fmt.Errorf("%s: GET %s = %q, %v; want %q, or the benchmark would not measure a hit", t.name, benchKey, got, err, instance)
		}
	}

	var rows []row
	for _, p := range []struct {
		pipeline, requests int
	}{{1, o.requests1}, {16, o.requests16}} {
		rps := map[string][]float64{}
		for round := range o.rounds {
			for i := range targets {
				t := targets[(i+round)%len(targets)]
				v, err := redisBenchmark(ctx, t.addr, o.clients, p.requests, p.pipeline)
				if err != nil {
					return rows, fmt.Errorf("%s: %w", t.name, err)
				}
				progress("resp: -P %d round %d: %-22s %10.0f req/s", p.pipeline, round+1, t.name, v)
				rps[t.name] = append(rps[t.name], v)
			}
		}
		peer := median(rps["redis-server"])
		for _, name := range []string{"ringman", "ringman GOMAXPROCS=1"} {
			own := median(rps[name])
			what := fmt.Sprintf("RESP GET req/s, -c %d -P %d", o.clients, p.pipeline)
			if name != "ringman" {
				what += " (" + strings.TrimPrefix(name, "ringman ") + ")"
			}
			rows = append(rows, row{
				measurement: what,
				ringman:     fmt.Sprintf("%.0f", own),
				peer:        fmt.Sprintf("%.0f redis", peer),
				ratio:       fmt.Sprintf("%.2f×", own/peer),
				goal:        "≥ 1.00×",
				met:         yesNo(own >= peer),
			})
		}
	}
	return rows, nil
}

// redisBenchmark runs one GET benchmark and returns its requests per second.
func redisBenchmark(ctx context.Context, addr string, clients, requests, pipeline int) (float64, error) {
	host, port, err := splitAddr(addr)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	args := []string{"-h", host, "-p", port, "-c", strconv.Itoa(clients), "-n", strconv.Itoa(requests),
		"-P", strconv.Itoa(pipeline), "-t", "get", "-q", "--csv"}
	cmd := groupCommand(ctx, "redis-benchmark", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("redis-benchmark %s: %w: %s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	// --csv: a header line, then "GET","<rps>",...
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, ",")
		if len(f) >= 2 && strings.Trim(f[0], `"`) == "GET" {
			v, err := strconv.ParseFloat(strings.Trim(f[1], `"`), 64)
			if err != nil {
				break
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("redis-benchmark %s: no GET result in %q", strings.Join(args, " "), out)
}

func splitAddr(addr string) (string, string, error) {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return "", "", fmt.Errorf("address %q has no port", addr)
	}
	return addr[:i], addr[i+1:], nil
}

// redisServer is a redis-server process on a free loopback port.
type redisServer struct {
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis starts redis-server without persistence and waits for PING.
func startRedis(ctx context.Context, dir string, cl *cleanups) (*redisServer, error) {
	var lastErr error
	for range 3 { // another process may take the port between probe and bind
		port, err := cluster.FreePort()
		if err != nil {
			return nil, err
		}
		rs, err := tryStartRedis(ctx, dir, port, cl)
		if err == nil {
			return rs, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func tryStartRedis(ctx context.Context, dir string, port int, cl *cleanups) (*redisServer, error) {
	logPath := filepath.Join(dir, "redis-server.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no", "--dir", dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = cluster.SysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	rs := &redisServer{addr: "127.0.0.1:" + strconv.Itoa(port), cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(rs.done) }()
	cl.add(rs.kill)

	rdb := redis.NewClient(&redis.Options{Addr: rs.addr, DialTimeout: time.Second, MaxRetries: -1})
	defer rdb.Close()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var exited bool
	err = cluster.Poll(wctx, 20*time.Millisecond, "redis-server answers PING on "+rs.addr, func() (bool, string) {
		select {
		case <-rs.done:
			exited = true
			return true, ""
		default:
		}
		if err := rdb.Ping(wctx).Err(); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if exited || err != nil {
		rs.kill()
		raw, _ := os.ReadFile(logPath)
		if err == nil {
			err = errors.New("redis-server exited")
		}
		return nil, fmt.Errorf("%w; log:\n%s", err, lastLines(raw, 10))
	}
	return rs, nil
}

// stop sends SIGTERM, then SIGKILL after 5 s.
func (rs *redisServer) stop() {
	rs.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-rs.done:
	case <-time.After(5 * time.Second):
		rs.kill()
	}
}

func (rs *redisServer) kill() {
	select {
	case <-rs.done:
		return
	default:
	}
	rs.cmd.Process.Kill()
	<-rs.done
}
