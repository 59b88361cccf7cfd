package faults

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"ringman/httpapi"
	"ringman/test/cluster"
)

const (
	// readyTimeout bounds a start: a fast-profile node is ready in well
	// under a second; a node that restarts without seeds waits for a known
	// peer to answer.
	readyTimeout = 30 * time.Second
	// stopTimeout bounds a graceful stop: --leave-timeout (5 s) plus the
	// 1 s HTTP shutdown, plus room.
	stopTimeout = 10 * time.Second
)

// node is one `ringman serve` process, run with `ip netns exec` in its own
// namespace: gossip and the HTTP API on the namespace's address, RESP on a
// unix socket. A socket is a file, so the test reaches it across
// namespaces, and the network faults (which cut gossip) never cut the load
// generator off from the node it asks.
//
// The node's backend is a Go HTTP server in the test process whose listener
// was opened inside the namespace (netns.listen): it has the node's address,
// as an instance on the node's host would, and answers "<node> <path>", so
// the test can check that an answer names a server that really serves.
type node struct {
	name    string
	core    bool // one of the five that run all the time
	ns      *netns
	dataDir string
	logPath string
	sock    string
	truth   *truth

	mu         sync.Mutex
	ip         string
	gossipPort int
	httpPort   int
	backend    *backend
	seeds      []string // --join at the next start
	cmd        *exec.Cmd
	done       chan struct{}
	state      *os.ProcessState
	expectExit bool     // the test stops or kills it: an exit is no surprise
	surprises  []string // exits the test did not cause
	serving    bool     // the load generator may ask it
	epoch      uint64   // bumped whenever serving changes
	rdb        *redis.Client
	api        *httpapi.Client
}

func newNode(name string, core bool, ns *netns, dir string, tr *truth) (*node, error) {
	n := &node{
		name:    name,
		core:    core,
		ns:      ns,
		dataDir: filepath.Join(dir, name),
		logPath: filepath.Join(dir, name+".log"),
		sock:    filepath.Join(dir, name+".sock"),
		truth:   tr,
		ip:      ns.homeIP(),
	}
	if err := os.MkdirAll(n.dataDir, 0o700); err != nil {
		return nil, err
	}
	return n, nil
}

// gossipAddr is the node's current gossip address.
func (n *node) gossipAddr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return net.JoinHostPort(n.ip, strconv.Itoa(n.gossipPort))
}

// addr is the node's current IP.
func (n *node) addr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ip
}

// instance is the host:port the node advertises.
func (n *node) instance() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.backend == nil {
		return ""
	}
	return n.backend.addr
}

// moveTo gives the stopped node a new address: the namespace's address
// changes, and the node gets new ports and a new backend there.
func (n *node) moveTo(ctx context.Context, ip string) error {
	if n.running() {
		return fmt.Errorf("%s: cannot move a running node", n.name)
	}
	n.mu.Lock()
	old := n.ip
	b := n.backend
	n.backend, n.gossipPort, n.httpPort = nil, 0, 0
	n.mu.Unlock()
	if b != nil {
		b.close()
	}
	if err := n.ns.readdress(ctx, old, ip); err != nil {
		return err
	}
	n.mu.Lock()
	n.ip = ip
	n.mu.Unlock()
	return nil
}

// start runs the process (again: same name, data dir and ports) and waits
// until its /readyz answers 200.
func (n *node) start(ctx context.Context) error {
	n.mu.Lock()
	if n.cmd != nil && n.state == nil {
		n.mu.Unlock()
		return fmt.Errorf("%s is already running", n.name)
	}
	ip := n.ip
	n.mu.Unlock()
	if err := n.prepare(ip); err != nil {
		return err
	}
	// Others may answer the instance as soon as the node joins, before
	// its /readyz says so.
	n.truth.advertise(n.instance(), n.name)
	n.mu.Lock()
	args := []string{"netns", "exec", n.ns.name, bin, "serve",
		"--name", n.name,
		"--data-dir", n.dataDir,
		"--profile", "fast",
		"--bind", net.JoinHostPort(ip, strconv.Itoa(n.gossipPort)),
		"--http-addr", net.JoinHostPort(ip, strconv.Itoa(n.httpPort)),
		"--redis-addr", "unix:" + n.sock,
		"--service", "web=" + n.backend.addr,
	}
	for _, s := range n.seeds {
		args = append(args, "--join", s)
	}
	// At nice -10: on a shared CI machine other work must not starve the
	// failure detector, whose windows are promises about a node that gets
	// the CPU. `nice` and `ip netns exec` exec in turn, so the pid is the
	// daemon's and every thread of it inherits the priority.
	args = append([]string{"-n", "-10", "ip"}, args...)
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.mu.Unlock()
		return err
	}
	fmt.Fprintf(logf, "===== %s: nice %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := exec.Command("nice", args...)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = cluster.SysProcAttr()
	err = cmd.Start()
	logf.Close()
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	done := make(chan struct{})
	n.cmd, n.done, n.state, n.expectExit = cmd, done, nil, false
	n.mu.Unlock()
	go func() {
		cmd.Wait()
		n.mu.Lock()
		n.state = cmd.ProcessState
		if !n.expectExit {
			n.surprises = append(n.surprises, fmt.Sprintf("%s exited by itself (%s)", n.name, cmd.ProcessState))
		}
		n.mu.Unlock()
		close(done)
	}()
	if err := n.waitReady(ctx, done); err != nil {
		return err
	}
	n.setServing(true)
	return nil
}

// prepare picks free ports inside the namespace and starts the backend,
// the first time and after a move.
func (n *node) prepare(ip string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var err error
	// The backend first: its listener keeps its port out of the picks.
	if n.backend == nil {
		if n.backend, err = startBackend(n.ns, ip, n.name); err != nil {
			return err
		}
	}
	if n.gossipPort == 0 {
		if n.gossipPort, err = n.ns.freePort(ip); err != nil {
			return err
		}
		if n.httpPort, err = n.ns.freePort(ip, n.gossipPort); err != nil {
			return err
		}
	}
	if n.rdb != nil {
		n.rdb.Close()
	}
	// A new client per start: a pooled connection to the previous process
	// would fail once, and the load generator counts every error.
	n.rdb = redis.NewClient(&redis.Options{
		Network:         "unix",
		Addr:            n.sock,
		Protocol:        2,
		DisableIdentity: true,
		MaxRetries:      -1,
		PoolSize:        4,
		DialTimeout:     time.Second,
		ReadTimeout:     lookupTimeout,
		WriteTimeout:    lookupTimeout,
	})
	if n.api, err = httpapi.NewClient(net.JoinHostPort(ip, strconv.Itoa(n.httpPort)), ""); err != nil {
		return err
	}
	return nil
}

func (n *node) waitReady(ctx context.Context, done chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	n.mu.Lock()
	url := fmt.Sprintf("http://%s/readyz", net.JoinHostPort(n.ip, strconv.Itoa(n.httpPort)))
	n.mu.Unlock()
	hc := &http.Client{Timeout: time.Second}
	var exited error
	err := cluster.Poll(ctx, 25*time.Millisecond, fmt.Sprintf("%s ready (GET %s = 200)", n.name, url), func() (bool, string) {
		select {
		case <-done:
			exited = fmt.Errorf("%s exited before it was ready (%s); log:\n%s", n.name, n.exitState(), n.logTail(30))
			return true, ""
		default:
		}
		resp, err := hc.Get(url)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		return true, ""
	})
	if exited != nil {
		return exited
	}
	if err != nil {
		return fmt.Errorf("%w; log:\n%s", err, n.logTail(30))
	}
	return nil
}

// setServing tells the load generator whether to ask the node.
func (n *node) setServing(on bool) {
	n.mu.Lock()
	n.serving = on
	n.epoch++
	n.mu.Unlock()
}

// client returns the RESP client and the serving epoch, or nil when the
// node is not serving.
func (n *node) client() (*redis.Client, uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.serving {
		return nil, n.epoch
	}
	return n.rdb, n.epoch
}

// stillServing reports whether the node has served without interruption
// since epoch.
func (n *node) stillServing(epoch uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.serving && n.epoch == epoch
}

func (n *node) redis() *redis.Client {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rdb
}

func (n *node) API() *httpapi.Client {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.api
}

func (n *node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil && n.state == nil
}

func (n *node) exitState() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.cmd == nil:
		return "never started"
	case n.state == nil:
		return "running"
	default:
		return n.state.String()
	}
}

// takeSurprises returns and forgets the exits the test did not cause.
func (n *node) takeSurprises() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.surprises
	n.surprises = nil
	return s
}

func (n *node) signal(sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.state != nil {
		return fmt.Errorf("%s is not running", n.name)
	}
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		n.expectExit = true
	}
	return n.cmd.Process.Signal(sig)
}

func (n *node) wait(timeout time.Duration) bool {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done == nil {
		return true
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// kill is kill -9: the node stops being asked first.
func (n *node) kill() error {
	n.setServing(false)
	if err := n.signal(syscall.SIGKILL); err != nil {
		return err
	}
	if !n.wait(5 * time.Second) {
		return fmt.Errorf("%s not reaped 5 s after SIGKILL", n.name)
	}
	return nil
}

// stop is SIGTERM (drain, leave, exit 0); it returns the exit code, or an
// error when the node had to be killed.
func (n *node) stop() (int, error) {
	n.setServing(false)
	if err := n.signal(syscall.SIGTERM); err != nil {
		return -1, err
	}
	if !n.wait(stopTimeout) {
		n.signal(syscall.SIGKILL)
		n.wait(5 * time.Second)
		return -1, fmt.Errorf("%s did not exit within %v of SIGTERM; killed", n.name, stopTimeout)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state.ExitCode(), nil
}

// pause is SIGSTOP: a hung process, not a dead one.
func (n *node) pause() error {
	n.setServing(false)
	return n.signal(syscall.SIGSTOP)
}

func (n *node) resume() error {
	if err := n.signal(syscall.SIGCONT); err != nil {
		return err
	}
	n.setServing(true)
	return nil
}

// close kills the process (if it runs, even stopped) and the backend.
func (n *node) close() {
	n.setServing(false)
	_ = n.signal(syscall.SIGKILL)
	n.wait(5 * time.Second)
	n.mu.Lock()
	b := n.backend
	n.backend = nil
	if n.rdb != nil {
		n.rdb.Close()
		n.rdb = nil
	}
	n.mu.Unlock()
	if b != nil {
		b.close()
	}
}

// ringMembers returns RING.MEMBERS of the default service, sorted.
func (n *node) ringMembers(ctx context.Context) ([]string, error) {
	got, err := cluster.RingMembers(ctx, n.redis())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.name, err)
	}
	return got, nil
}

// lookups answers GET for every key, pipelined; "" stands for nil.
func (n *node) lookups(ctx context.Context, keys []string) ([]string, error) {
	got, err := cluster.Lookups(ctx, n.redis(), keys)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.name, err)
	}
	return got, nil
}

// logSince returns the node's log from byte offset on, and its length.
func (n *node) logSince(offset int64) (string, int64) {
	raw, err := os.ReadFile(n.logPath)
	if err != nil || int64(len(raw)) < offset {
		return "", 0
	}
	return string(raw[offset:]), int64(len(raw))
}

func (n *node) logTail(lines int) string {
	raw, err := os.ReadFile(n.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(raw) > 64<<10 {
		raw = raw[len(raw)-64<<10:]
	}
	all := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// backend is a node's HTTP instance.
type backend struct {
	addr string
	srv  *http.Server
}

func startBackend(ns *netns, ip, name string) (*backend, error) {
	ln, _, err := ns.listen("tcp4", net.JoinHostPort(ip, "0"))
	if err != nil {
		return nil, fmt.Errorf("backend of %s: %w", name, err)
	}
	b := &backend{addr: ln.Addr().String()}
	b.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s\n", name, r.URL.Path)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go b.srv.Serve(ln)
	return b, nil
}

func (b *backend) close() { b.srv.Close() }

// cleanEnv is the environment without RINGMAN_* variables, so that a
// developer's settings cannot change what the test starts.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RINGMAN_") {
			env = append(env, kv)
		}
	}
	return env
}
