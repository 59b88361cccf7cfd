// Package cluster runs real `ringman serve` processes on loopback, for the
// end-to-end tests (test/e2e) and the benchmark harness (test/bench).
//
// It exists so that both drive the shipped binary the way an operator does:
// separate processes, free ports picked at run time (never fixed ones), the
// fast gossip profile, a data dir per node, signals to stop them. Every
// process's stdout and stderr go to a log file that callers show on failure.
// Waiting is always polling with a deadline (see Poll), never sleeping.
package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"ringman/httpapi"
)

// Bounds on waiting for a process. A node of the fast profile is ready in
// well under a second on an idle machine; the bounds leave room for a busy CI
// runner and the race detector in the test process.
const (
	// ReadyTimeout bounds Start when the caller's context has no deadline.
	ReadyTimeout = 20 * time.Second
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL:
	// the daemon's default --leave-timeout (5 s) plus its 1 s HTTP shutdown.
	StopTimeout = 8 * time.Second
	// killTimeout bounds waiting for the kernel to reap a SIGKILLed process.
	killTimeout = 5 * time.Second
	// startAttempts is how often Start picks new ports when another process
	// took one between our probe and the node's bind.
	startAttempts = 3
)

// Poll calls cond every interval until it reports true, and returns nil; or
// until ctx ends, and returns an error naming what was not reached and
// cond's last reason.
func Poll(ctx context.Context, interval time.Duration, what string, cond func() (bool, string)) error {
	start := time.Now()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not reached after %v: %s", what, time.Since(start).Round(time.Millisecond), why)
		case <-tick.C:
		}
	}
}

// Cluster is a set of nodes started from one binary, with their data dirs
// and logs under one directory. Its methods are safe for concurrent use.
type Cluster struct {
	bin string
	dir string

	mu    sync.Mutex
	nodes []*Node
}

// New returns an empty cluster of nodes run from bin, keeping data dirs and
// logs under dir (which must exist).
func New(bin, dir string) *Cluster {
	return &Cluster{bin: bin, dir: dir}
}

// NodeConfig describes a node to start. Ports are picked by the cluster.
type NodeConfig struct {
	// Name is the node name (--name); also names its data dir and log file.
	Name string
	// Services are --service values, e.g. "web=127.0.0.1:9001".
	Services []string
	// Join are --join seeds (gossip addresses).
	Join []string
	// Args are extra `serve` flags, e.g. "--leave-timeout", "3s".
	Args []string
	// Env are extra environment variables, e.g. "GOMAXPROCS=1".
	Env []string
}

// Start starts a node and waits until its /readyz answers 200 (bounded by
// ctx, or ReadyTimeout when ctx has no deadline). When the node cannot bind
// a port that was free a moment before, it is retried with new ports.
func (c *Cluster) Start(ctx context.Context, cfg NodeConfig) (*Node, error) {
	if cfg.Name == "" {
		return nil, errors.New("cluster: node name is empty")
	}
	n := &Node{
		NodeConfig: cfg,
		bin:        c.bin,
		DataDir:    filepath.Join(c.dir, cfg.Name),
		LogPath:    filepath.Join(c.dir, cfg.Name+".log"),
	}
	if err := os.MkdirAll(n.DataDir, 0o755); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	var err error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		if err = n.pickPorts(); err != nil {
			return n, err
		}
		err = n.Start(ctx)
		if err == nil || !errors.Is(err, errAddrInUse) {
			return n, err
		}
	}
	return n, err
}

// StartRing starts count nodes named prefix1..prefixN, each advertising one
// instance of service on a free loopback port; the first has no seeds and
// the others join it. It returns once every node is ready (not necessarily
// once every node sees every other: see WaitInstances).
func (c *Cluster) StartRing(ctx context.Context, prefix, service string, count int, args ...string) ([]*Node, error) {
	nodes := make([]*Node, 0, count)
	for i := 1; i <= count; i++ {
		port, err := FreePort()
		if err != nil {
			return nodes, err
		}
		cfg := NodeConfig{
			Name:     fmt.Sprintf("%s%d", prefix, i),
			Services: []string{fmt.Sprintf("%s=127.0.0.1:%d", service, port)},
			Args:     args,
		}
		if i > 1 {
			cfg.Join = []string{nodes[0].GossipAddr}
		}
		n, err := c.Start(ctx, cfg)
		if err != nil {
			return nodes, err
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// Nodes returns the nodes started so far.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// Close stops every node that still runs (SIGTERM, then SIGKILL after
// StopTimeout), all at once, and closes their clients.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes() {
		wg.Go(func() {
			n.Stop(StopTimeout)
			n.closeClients()
		})
	}
	wg.Wait()
}

// Kill SIGKILLs every node that still runs, at once: for cleanup when there
// is no time for graceful leaves.
func (c *Cluster) Kill() {
	for _, n := range c.Nodes() {
		n.Kill()
		n.closeClients()
	}
}

// Logs returns the end of every node's log, for a failure report.
func (c *Cluster) Logs() string {
	var b strings.Builder
	for _, n := range c.Nodes() {
		fmt.Fprintf(&b, "----- %s (%s) -----\n%s\n", n.Name, n.LogPath, n.LogTail(60))
	}
	return b.String()
}

// WaitInstances polls RING.MEMBERS on every node until each reports exactly
// want (in any order).
func WaitInstances(ctx context.Context, nodes []*Node, want []string) error {
	want = slices.Sorted(slices.Values(want))
	return Poll(ctx, 20*time.Millisecond, fmt.Sprintf("every node's ring = %v", want), func() (bool, string) {
		for _, n := range nodes {
			got, err := n.RingMembers(ctx)
			if err != nil {
				return false, fmt.Sprintf("%s: RING.MEMBERS: %v", n.Name, err)
			}
			if !slices.Equal(got, want) {
				return false, fmt.Sprintf("%s has %v", n.Name, got)
			}
		}
		return true, ""
	})
}

// Node is one `ringman serve` process. The exported configuration is used
// at every Start: clear Join to restart a node without seeds.
type Node struct {
	NodeConfig
	DataDir    string
	LogPath    string
	GossipAddr string // 127.0.0.1:port, TCP and UDP
	RESPAddr   string
	HTTPAddr   string

	bin string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has been waited for
	state   *os.ProcessState
	started time.Time
	rdb     *redis.Client
	api     *httpapi.Client
}

var errAddrInUse = errors.New("address already in use")

func (n *Node) pickPorts() error {
	ports, err := FreePorts(3)
	if err != nil {
		return err
	}
	n.GossipAddr = "127.0.0.1:" + strconv.Itoa(ports[0])
	n.RESPAddr = "127.0.0.1:" + strconv.Itoa(ports[1])
	n.HTTPAddr = "127.0.0.1:" + strconv.Itoa(ports[2])
	n.closeClients()
	return nil
}

// Instances returns the host:port of each instance the node advertises
// (without attributes).
func (n *Node) Instances() []string {
	var out []string
	for _, s := range n.Services {
		if first, _, _ := strings.Cut(s, ","); strings.Contains(first, "=") {
			_, s, _ = strings.Cut(s, "=")
		}
		inst, _, _ := strings.Cut(s, ",") // attributes: id=, weight=
		out = append(out, inst)
	}
	return out
}

// Instance returns the node's first instance, or "" when it has none.
func (n *Node) Instance() string {
	if insts := n.Instances(); len(insts) > 0 {
		return insts[0]
	}
	return ""
}

// CommandLine returns the node's arguments, without the binary.
func (n *Node) CommandLine() []string {
	args := []string{"serve",
		"--name", n.Name,
		"--data-dir", n.DataDir,
		"--profile", "fast",
		"--bind", n.GossipAddr,
		"--redis-addr", n.RESPAddr,
		"--http-addr", n.HTTPAddr,
	}
	for _, s := range n.Services {
		args = append(args, "--service", s)
	}
	for _, j := range n.Join {
		args = append(args, "--join", j)
	}
	return append(args, n.Args...)
}

// Start starts the process (again, after it stopped: same name, data dir
// and ports) and waits until /readyz answers 200.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	if n.cmd != nil && n.state == nil {
		n.mu.Unlock()
		return fmt.Errorf("node %s is already running (pid %d)", n.Name, n.cmd.Process.Pid)
	}
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.mu.Unlock()
		return err
	}
	args := n.CommandLine()
	fmt.Fprintf(logf, "===== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), n.bin, strings.Join(args, " "))
	cmd := exec.Command(n.bin, args...)
	cmd.Env = append(cleanEnv(), n.Env...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = SysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		n.mu.Unlock()
		return fmt.Errorf("start node %s: %w", n.Name, err)
	}
	logf.Close() // the child has its own copy
	done := make(chan struct{})
	n.cmd, n.done, n.state, n.started = cmd, done, nil, time.Now()
	n.mu.Unlock()
	go func() {
		cmd.Wait()
		n.mu.Lock()
		n.state = cmd.ProcessState
		n.mu.Unlock()
		close(done)
	}()
	return n.WaitReady(ctx)
}

// WaitReady polls /readyz until it answers 200; it fails at once when the
// process exits.
func (n *Node) WaitReady(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ReadyTimeout)
		defer cancel()
	}
	hc := &http.Client{Timeout: time.Second}
	url := "http://" + n.HTTPAddr + "/readyz"
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	var exited error
	err := Poll(ctx, 25*time.Millisecond, fmt.Sprintf("node %s ready (GET %s = 200)", n.Name, url), func() (bool, string) {
		select {
		case <-done:
			exited = fmt.Errorf("node %s exited before it was ready (%s); log:\n%s", n.Name, n.ExitState(), n.LogTail(30))
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
			var st httpapi.Status
			if json.Unmarshal(body, &st) == nil && st.Reason != "" {
				return false, fmt.Sprintf("%s: %s", resp.Status, st.Reason)
			}
			return false, fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(body))
		}
		return true, ""
	})
	if exited != nil {
		if strings.Contains(n.LogTail(30), "address already in use") {
			return fmt.Errorf("%w: %w", errAddrInUse, exited)
		}
		return exited
	}
	if err != nil {
		return fmt.Errorf("%w; log:\n%s", err, n.LogTail(30))
	}
	return nil
}

// Running reports whether the process runs.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil && n.state == nil
}

// Pid returns the process id of the last start, or 0.
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// ExitState describes how the process ended ("running" while it runs).
func (n *Node) ExitState() string {
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

// ExitCode returns the exit code of the last run, or -1 when it runs, never
// ran, or was ended by a signal.
func (n *Node) ExitCode() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state == nil {
		return -1
	}
	return n.state.ExitCode()
}

// Signal sends sig to the process.
func (n *Node) Signal(sig os.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.state != nil {
		return fmt.Errorf("node %s is not running", n.Name)
	}
	return n.cmd.Process.Signal(sig)
}

// Wait waits up to timeout for the process to exit and reports whether it did.
func (n *Node) Wait(timeout time.Duration) bool {
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

// Stop sends SIGTERM and waits up to timeout for the exit, then SIGKILLs.
// It returns how long the graceful part took and an error when the process
// had to be killed. Stopping a stopped node does nothing.
func (n *Node) Stop(timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	if n.Signal(syscall.SIGTERM) != nil {
		return 0, nil
	}
	if n.Wait(timeout) {
		return time.Since(start), nil
	}
	n.Kill()
	return time.Since(start), fmt.Errorf("node %s did not exit within %v of SIGTERM; killed", n.Name, timeout)
}

// Kill sends SIGKILL (kill -9) and waits until the process is reaped.
func (n *Node) Kill() error {
	if err := n.Signal(syscall.SIGKILL); err != nil {
		return nil // not running
	}
	if !n.Wait(killTimeout) {
		return fmt.Errorf("node %s not reaped %v after SIGKILL", n.Name, killTimeout)
	}
	return nil
}

// LogTail returns the last lines of the node's log.
func (n *Node) LogTail(lines int) string {
	raw, err := os.ReadFile(n.LogPath)
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

// Log returns the whole log of the node.
func (n *Node) Log() string {
	raw, _ := os.ReadFile(n.LogPath)
	return string(raw)
}

// Redis returns a go-redis client of the node's RESP address. It survives
// restarts (the pool redials).
func (n *Node) Redis() *redis.Client {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.rdb == nil {
		n.rdb = redis.NewClient(&redis.Options{
			Addr:         n.RESPAddr,
			DialTimeout:  2 * time.Second,
			ReadTimeout:  5 * time.Second,
			WriteTimeout: 5 * time.Second,
			PoolSize:     4,
		})
	}
	return n.rdb
}

// API returns a client of the node's HTTP API.
func (n *Node) API() *httpapi.Client {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.api == nil {
		c, err := httpapi.NewClient(n.HTTPAddr, "")
		if err != nil {
			panic(err) // HTTPAddr is always host:port
		}
		n.api = c
	}
	return n.api
}

func (n *Node) closeClients() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.rdb != nil {
		n.rdb.Close()
		n.rdb = nil
	}
	n.api = nil
}

// RingMembers returns RING.MEMBERS of the default service, sorted.
func (n *Node) RingMembers(ctx context.Context) ([]string, error) {
	return RingMembers(ctx, n.Redis())
}

// Lookups answers GET for every key, pipelined in batches; "" stands for nil.
func (n *Node) Lookups(ctx context.Context, keys []string) ([]string, error) {
	out, err := Lookups(ctx, n.Redis(), keys)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.Name, err)
	}
	return out, nil
}

// RingMembers returns RING.MEMBERS of the default service from the node
// rdb talks to, sorted. Runners other than Node's (test/faults) use it.
func RingMembers(ctx context.Context, rdb *redis.Client) ([]string, error) {
	got, err := rdb.Do(ctx, "RING.MEMBERS").StringSlice()
	if err != nil {
		return nil, fmt.Errorf("RING.MEMBERS: %w", err)
	}
	slices.Sort(got)
	return got, nil
}

// Lookups answers GET for every key through rdb, pipelined in batches; ""
// stands for nil.
func Lookups(ctx context.Context, rdb *redis.Client, keys []string) ([]string, error) {
	const batch = 1000
	out := make([]string, 0, len(keys))
	for i := 0; i < len(keys); i += batch {
		part := keys[i:min(i+batch, len(keys))]
		pipe := rdb.Pipeline()
		cmds := make([]*redis.StringCmd, len(part))
		for j, k := range part {
			cmds[j] = pipe.Get(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("pipelined GET: %w", err)
		}
		for j, cmd := range cmds {
			v, err := cmd.Result()
			switch {
			case errors.Is(err, redis.Nil):
				v = ""
			case err != nil:
				return nil, fmt.Errorf("GET %q: %w", part[j], err)
			}
			out = append(out, v)
		}
	}
	return out, nil
}

// MemberStatus returns each member's status as the node's /v1/members lists it.
func (n *Node) MemberStatus(ctx context.Context) (map[string]string, error) {
	ms, err := n.API().Members(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(ms))
	for _, m := range ms {
		out[m.Name] = m.Status
	}
	return out, nil
}

// cleanEnv is the environment without RINGMAN_* variables, so that a
// developer's settings cannot change what a test starts.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RINGMAN_") {
			env = append(env, kv)
		}
	}
	return env
}

var (
	portsMu sync.Mutex
	given   = map[int]bool{}
)

// FreePort returns a loopback port that is free for both TCP and UDP (gossip
// needs both on one port) and that this process has not handed out before.
// Another process may still take it before it is used; Cluster.Start retries.
func FreePort() (int, error) {
	ports, err := FreePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// FreePorts returns count distinct ports as FreePort does.
func FreePorts(count int) ([]int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	var out []int
	for tries := 0; len(out) < count; tries++ {
		if tries > 100*count {
			return nil, fmt.Errorf("no free loopback TCP+UDP port after %d tries", tries)
		}
		tl, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("probe free port: %w", err)
		}
		port := tl.Addr().(*net.TCPAddr).Port
		ul, err := net.ListenPacket("udp4", tl.Addr().String())
		tl.Close()
		if err != nil {
			continue
		}
		ul.Close()
		if given[port] {
			continue
		}
		given[port] = true
		out = append(out, port)
	}
	return out, nil
}

// Build builds ./cmd/ringman of the module that contains the working
// directory into dir and returns the binary's path.
func Build(ctx context.Context, dir string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		if goroot := os.Getenv("GOROOT"); goroot != "" {
			goBin = filepath.Join(goroot, "bin", "go")
		} else {
			return "", fmt.Errorf("build ringman: go not found in PATH: %w", err)
		}
	}
	bin := filepath.Join(dir, "ringman")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, "./cmd/ringman")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/ringman in %s: %w\n%s", root, err, out)
	}
	return bin, nil
}

// BuildOnce gives a test package's TestMain the ringman binary under test,
// built once per run: $RINGMAN_BIN when it is set, else ./cmd/ringman built
// (within 5 minutes) into a fresh temporary directory named prefix*.
//
// buildErr is why the build failed; the tests report it themselves, so that
// the failure shows in each one that needs the binary. err means the
// temporary directory could not be made: the run should stop. cleanup
// removes the directory; call it after m.Run (it is never nil).
func BuildOnce(prefix string) (bin string, buildErr error, cleanup func(), err error) {
	cleanup = func() {}
	if bin = os.Getenv("RINGMAN_BIN"); bin != "" {
		return bin, nil, cleanup, nil
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, cleanup, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, buildErr = Build(ctx, dir)
	return bin, buildErr, cleanup, nil
}

// ModuleRoot returns the directory of the ringman module's go.mod, looking
// up from the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if raw, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			for _, line := range strings.Split(string(raw), "\n") {
				if strings.TrimSpace(line) == "module ringman" {
					return dir, nil
				}
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("module ringman not found above the working directory")
		}
		dir = parent
	}
}
