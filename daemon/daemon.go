// Package daemon runs one ringman node in-process: the data file, the
// overrides, the router, gossip, the RESP and HTTP listeners and the table
// files, wired together and stopped in order.
//
// It exists so that a node is not only a binary: `ringman serve` is flags,
// a banner and signals around Start and Shutdown, and tests (or a program
// that embeds ringman) start as many nodes as they like in one process,
// on port 0.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"ringman/discovery"
	"ringman/hostmap"
	"ringman/httpapi"
	"ringman/metrics"
	"ringman/redisapi"
	"ringman/ring"
	"ringman/router"
	"ringman/store"
	"ringman/tablefile"
)

// ErrLeaveRequested is Node.Err after a leave through the HTTP API
// (POST /v1/leave): the node asks its owner to shut it down.
var ErrLeaveRequested = errors.New("leave requested through the API")

// ErrStopped is Node.Err once Shutdown or Close has stopped the node for
// no other reason.
var ErrStopped = errors.New("node stopped")

// httpShutdownTimeout bounds how long Shutdown lets HTTP requests in
// flight finish once the node has left.
const httpShutdownTimeout = time.Second

// readyPoll is how often Ready's watcher asks whether the node is ready
// (the same question as /readyz) until it is.
const readyPoll = 50 * time.Millisecond

// Node is a running node. Its methods are safe for concurrent use.
type Node struct {
	cfg Config
	log *slog.Logger

	store     *store.Store
	overrides *hostmap.Table
	tables    *tablefile.Writer // nil without Config.TableDir
	gossip    *discovery.Node
	resp      *redisapi.Server
	httpLn    net.Listener
	httpSrv   *http.Server
	ready     *readiness

	keyCount  int
	keySource string
	warnings  []string

	readyC     chan struct{} // closed once ready
	watchReady sync.Once     // starts watchReadiness, on the first call of Ready
	stopping   chan struct{} // closed when Shutdown or Close begins
	done       chan struct{} // closed with err set
	doneOnce   sync.Once
	err        error // why done is closed; written once, before close(done)
	stopOnce   sync.Once
	stopErr    error
}

// Start validates cfg, opens the data file, joins the cluster in the
// background and starts serving RESP and HTTP. It returns once every
// listener is bound (the accessors say where); Ready says when the node
// first answers with the cluster's view. ctx bounds resolving the
// listening addresses, not the node's life: stop it with Shutdown.
//
// A *ConfigError is the caller's mistake; any other error is the
// machine's (the data file is locked, a port is taken). Either way
// nothing is left open.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	gossipIP, err := cfg.validate(ctx)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// The caller keeps its maps and slices.
	cfg.Services = maps.Clone(cfg.Services)
	cfg.DBs = maps.Clone(cfg.DBs)
	cfg.Join = slices.Clone(cfg.Join)
	log := cfg.Logger
	n := &Node{cfg: cfg, log: log, readyC: make(chan struct{}), stopping: make(chan struct{}), done: make(chan struct{})}
	defer func() {
		if err != nil {
			n.closeAll()
		}
	}()

	if n.store, err = store.Open(cfg.DataDir); err != nil {
		return nil, err
	}
	// Metrics that are recorded as they happen (commits, replication,
	// ring changes) start here; the rest is read when scraped.
	m := metrics.New()
	n.store.OnCommit(m.ObserveCommit)

	keys, keySource, keyWarning, err := startKeys(n.store, cfg.EncryptKey)
	if err != nil {
		return nil, err
	}
	if keyWarning != "" {
		log.Warn(keyWarning)
	}
	n.keyCount, n.keySource = len(keys), keySource

	n.overrides, err = hostmap.Open(n.store.DB(), hostmap.Options{Node: cfg.Name, TombstoneTTL: cfg.TombstoneTTL, MaxClockOffset: cfg.MaxClockOffset, Logger: log,
		OnCommit: m.ObserveCommit, OnReplicated: m.ObserveReplication})
	if err != nil {
		return nil, fmt.Errorf("data file %s: %w", n.store.Path(), err)
	}

	rt, err := router.New(cfg.Ring, cfg.DefaultService)
	if err != nil {
		return nil, &ConfigError{err}
	}
	rt.SetOverrides(n.overrides)
	services := []string{cfg.DefaultService}
	for _, s := range cfg.DBs {
		services = append(services, s)
	}
	// A DB names its service, so it exists though no instance of it may
	// be live yet: lookups on it are misses, not unknown services, on
	// every protocol.
	rt.Know(services...)
	// The table files start once the node is ready (see WriterConfig.Ready);
	// ready is set below, when /readyz exists.
	var readyRef atomic.Pointer[readiness]
	if cfg.TableDir != "" {
		n.tables, err = tablefile.NewWriter(tablefile.WriterConfig{Dir: cfg.TableDir, Router: rt, Services: services, Logger: log, OnWrite: m.TableWritten,
			Ready: func() bool {
				r := readyRef.Load()
				if r == nil {
					return false
				}
				ok, _ := r.check()
				return ok
			}})
		if err != nil {
			return nil, err
		}
		// An override write reaches nginx's files at once, not at the
		// writer's next tick.
		n.overrides.SetOnPublish(n.tables.Changed)
		go n.tables.Run()
	}
	var published atomic.Bool
	onChange := func(live map[string][]string) {
		changes, err := rt.UpdateInstances(ringInstances(live))
		if err != nil {
			log.Error("ring rebuild failed; keeping the previous ring", "err", err)
		}
		m.RingsChanged(changes, live)
		for _, ch := range changes {
			// One line per ring change, next to discovery's line for the
			// membership change that caused it.
			attrs := []any{"service", ch.Service, "added", ch.Added, "removed", ch.Removed}
			if len(ch.Reweighted) > 0 {
				attrs = append(attrs, "reweighted", ch.Reweighted)
			}
			log.Info("ring changed", append(attrs, "keys_moved", fmt.Sprintf("%.1f%%", 100*ch.Moved), "took", ch.Took.Round(time.Microsecond))...)
			if len(ch.Conflicts) > 0 {
				log.Warn("instances left out of the ring: another instance has their id or address (two nodes advertise one instance differently)",
					"service", ch.Service, "left_out", ch.Conflicts)
			}
			if ch.Idle > 0 {
				advice := fmt.Sprintf("more --partitions than %d", cfg.Ring.Partitions)
				if err := cfg.Ring.CheckInstances(len(live[ch.Service])); err != nil {
					advice = err.Error()
				}
				log.Warn("instances own no keys: the ring has too few partitions for them", "service", ch.Service,
					"idle", ch.Idle, "instances", len(live[ch.Service]), "advice", advice)
			}
		}
		published.Store(true)
		if n.tables != nil {
			n.tables.Changed()
		}
	}
	// The peers discovery will rejoin besides the seeds, for /readyz's
	// reason (discovery loads them again: it owns them).
	knownPeers, _ := n.store.LoadPeers()
	n.gossip, err = discovery.Start(discovery.Config{
		Name:          cfg.Name,
		BindAddr:      cfg.Bind,
		AdvertiseAddr: cfg.Advertise,
		Profile:       cfg.Profile,
		Label:         cfg.Label,
		Keys:          keys,
		KeyStore:      n.store,
		Services:      cfg.Services,
		Fingerprint:   cfg.Ring.Fingerprint(),
		Version:       cfg.Version,
		Seeds:         cfg.Join,
		Peers:         n.store,
		Check:         checkConfig(cfg),
		SlowStart:     cfg.SlowStart,
		SharedState:   n.overrides,
		Logger:        log,
		OnChange:      onChange,
	})
	if err != nil {
		return nil, fmt.Errorf("start gossip: %w", err)
	}
	node := n.gossip
	n.overrides.SetBroadcast(node.Broadcast)

	n.resp, err = redisapi.Listen(redisapi.Config{
		Addr:        cfg.RedisAddr,
		SocketMode:  cfg.SocketMode,
		Router:      rt,
		DBs:         cfg.DBs,
		RequirePass: cfg.RequirePass,
		IdleTimeout: cfg.IdleTimeout,
		Version:     cfg.Version,
		Members:     func() int { return len(node.Members()) },
		MaxClients:  cfg.MaxClients,
		Logger:      log,
	})
	if err != nil {
		return nil, fmt.Errorf("start RESP server: %w", err)
	}

	if n.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("start HTTP API: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	httpLookups := &httpapi.LookupCounters{}
	if err := m.Register(reg, metrics.Sources{
		Version:    cfg.Version,
		Commit:     cfg.Commit,
		RESP:       n.resp.Stats,
		MaxClients: cfg.MaxClients,
		HTTP:       httpLookups,
		Rings:      rt.Rings,
		Services:   services,
		Members:    node.Members,
		Check:      node.CheckState,
		Live:       node.Live,
		Overrides:  n.overrides,
	}); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	n.ready = &readiness{published: &published, node: node, rt: rt, seeds: cfg.Join, knownPeers: len(knownPeers)}
	readyRef.Store(n.ready)
	leaveReq := make(chan struct{})
	var leaveOnce sync.Once
	api := httpapi.New(httpapi.Config{
		Router:    rt,
		Cluster:   node,
		Overrides: n.overrides,
		Token:     cfg.APIToken,
		Keyring:   node,
		Leave:     func() { leaveOnce.Do(func() { close(leaveReq) }) },
		Registry:  reg,
		Lookups:   httpLookups,
		Logger:    log,
		Ready:     n.ready.check,
	})
	n.httpSrv = &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// From the end of the headers: outlasts ReadTimeout so that the 408
		// for a body that did not arrive in time can still be written.
		WriteTimeout:   35 * time.Second,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	serveErr := make(chan error, 2)
	go func() { serveErr <- n.resp.Serve() }()
	go func() { serveErr <- n.httpSrv.Serve(n.httpLn) }()
	go n.watch(leaveReq, serveErr)

	n.warnings = protectedMode(n.HTTPAddr(), n.RESPAddr(), cfg.APIToken != "", cfg.RequirePass != "")
	// The bound port is Bind's, or the advertised one when the system
	// picked it (port 0).
	_, gossipPort, _ := net.SplitHostPort(cfg.Bind)
	if _, p, err := net.SplitHostPort(node.Addr()); err == nil && gossipPort == "0" {
		gossipPort = p
	}
	n.warnings = append(n.warnings, gossipWarning(net.JoinHostPort(gossipIP, gossipPort), node.Encrypted())...)
	for _, w := range n.warnings {
		log.Warn(w)
	}
	return n, nil
}

// watch ends the node's life on its own terms: a leave through the API, or
// a listener that stopped serving (not because Shutdown closed it).
func (n *Node) watch(leaveReq <-chan struct{}, serveErr <-chan error) {
	select {
	case <-leaveReq:
		n.finish(ErrLeaveRequested)
	case err := <-serveErr:
		select {
		case <-n.stopping:
		default:
			n.finish(fmt.Errorf("listener stopped: %w", err))
		}
	case <-n.stopping:
	}
}

// watchReadiness closes readyC once the node first says it is ready.
func (n *Node) watchReadiness() {
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	for {
		if ok, _ := n.ready.check(); ok {
			close(n.readyC)
			return
		}
		select {
		case <-n.stopping:
			return
		case <-tick.C:
		}
	}
}

// finish records why the node is done, once, and closes Done.
func (n *Node) finish(err error) {
	n.doneOnce.Do(func() {
		n.err = err
		close(n.done)
	})
}

// Ready is closed once the node first reports ready, as /readyz does: it
// has joined its cluster (or has nobody to join) and its rings show the
// cluster as gossip sees it. It is never closed for a node stopped first.
// The first call starts asking, every 50 ms until the answer is yes: a
// node nobody asks (serve's) spends nothing on it.
func (n *Node) Ready() <-chan struct{} {
	n.watchReady.Do(func() { go n.watchReadiness() })
	return n.readyC
}

// Done is closed when the node asks to be shut down (a leave through the
// HTTP API, a listener that failed) or has been stopped; Err says which.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err is nil while Done is open; then ErrLeaveRequested, ErrStopped, or
// the error of the listener that stopped ("listener stopped: ...").
func (n *Node) Err() error {
	select {
	case <-n.done:
		return n.err
	default:
		return nil
	}
}

// Shutdown stops the node gracefully, in this order: it reports not ready,
// stops the table files (they keep the cluster as it was, so that nginx
// routes on while the node restarts), drains and leaves the cluster within
// Config.LeaveTimeout (and ctx), stops gossip, lets HTTP requests in flight
// finish (up to a second), closes RESP, and closes the data file. A drain
// or leave that does not complete is logged, not returned: the node is
// stopped either way. The error is the data file's, if it does not close.
// Calls after the first return its result.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopOnce.Do(func() {
		close(n.stopping)
		n.ready.stopping.Store(true)
		if n.tables != nil {
			n.tables.Close()
		}
		deadline := time.Now().Add(n.cfg.LeaveTimeout)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		if err := n.gossip.SetDraining(true); err != nil {
			n.log.Warn("drain before leave failed", "err", err)
		}
		if err := n.gossip.Leave(time.Until(deadline)); err != nil {
			n.log.Warn("graceful leave did not complete", "err", err)
		}
		n.gossip.Shutdown()
		httpCtx, cancel := context.WithTimeout(ctx, httpShutdownTimeout)
		defer cancel()
		n.httpSrv.Shutdown(httpCtx)
		n.stopErr = n.closeAll()
		n.finish(ErrStopped)
	})
	return n.stopErr
}

// Close stops the node at once, without draining or leaving: to the
// cluster it looks like a crash, detected as one. It is what follows a
// failed listener. Calls after the first (or after Shutdown) return the
// first's result.
func (n *Node) Close() error {
	n.stopOnce.Do(func() {
		close(n.stopping)
		n.ready.stopping.Store(true)
		n.stopErr = n.closeAll()
		n.finish(ErrStopped)
	})
	return n.stopErr
}

// closeAll closes whatever is open, the last opened first; Start's
// failures and Close go through it, Shutdown after its graceful steps.
func (n *Node) closeAll() error {
	if n.httpSrv != nil {
		n.httpSrv.Close()
	} else if n.httpLn != nil {
		n.httpLn.Close()
	}
	if n.resp != nil {
		n.resp.Close()
	}
	if n.gossip != nil {
		n.gossip.Shutdown()
	}
	if n.tables != nil {
		n.tables.Close()
	}
	var errs []error
	if n.overrides != nil {
		errs = append(errs, n.overrides.Close())
	}
	if n.store != nil {
		if err := n.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close data file %s: %w", n.store.Path(), err))
		}
	}
	return errors.Join(errs...)
}

// GossipAddr is the gossip address other nodes reach this one at, with
// the bound port when Bind asked for port 0.
func (n *Node) GossipAddr() string { return n.gossip.Addr() }

// RESPAddr is the RESP listener's address: host:port as bound, or unix:/path.
func (n *Node) RESPAddr() string { return n.resp.Addr() }

// HTTPAddr is the HTTP API's address as bound (host:port).
func (n *Node) HTTPAddr() string { return n.httpLn.Addr().String() }

// DataFile is the path of the node's data file.
func (n *Node) DataFile() string { return n.store.Path() }

// Encrypted reports whether gossip is encrypted.
func (n *Node) Encrypted() bool { return n.gossip.Encrypted() }

// StartKeys says how many gossip keys the node started with (0: gossip is
// not encrypted) and where they came from: "--encrypt", "the data file",
// or "--encrypt and the data file".
func (n *Node) StartKeys() (count int, source string) { return n.keyCount, n.keySource }

// Warnings are the start-up warnings (already logged): each listener that
// other hosts can reach without a secret.
func (n *Node) Warnings() []string { return slices.Clone(n.warnings) }

// checkConfig is the health check as discovery takes it; Config.validate
// has checked CheckStatus.
func checkConfig(cfg Config) discovery.Check {
	lo, hi, _ := ParseStatusRange(cfg.CheckStatus)
	return discovery.Check{
		URL: cfg.Check, Interval: cfg.CheckInterval, Timeout: cfg.CheckTimeout,
		Rise: cfg.CheckRise, Fall: cfg.CheckFall, StatusMin: lo, StatusMax: hi,
	}
}

// ringInstances turns the live instances as discovery gives them (canonical
// discovery.Instance strings) into the router's: weight-0 instances own
// nothing and are left out (they stay listed in members).
func ringInstances(live map[string][]string) map[string][]ring.Instance {
	out := make(map[string][]ring.Instance, len(live))
	for service, specs := range live {
		set := make([]ring.Instance, 0, len(specs))
		for _, spec := range specs {
			in, err := discovery.ParseInstance(spec)
			if err != nil || in.Weight == 0 {
				continue // discovery checked every spec: only weight 0 is left out
			}
			set = append(set, ring.Instance{Addr: in.Addr, ID: in.ID, Weight: in.Effective()})
		}
		out[service] = set
	}
	return out
}
