package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

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

// serveOptions are the flags of `ringman serve`.
type serveOptions struct {
	name           string
	bind           string
	advertise      string
	join           []string
	services       []string
	defaultService string
	dbs            []string
	check          string
	checkInterval  time.Duration
	checkTimeout   time.Duration
	redisAddr      string
	socketMode     string
	idleTimeout    time.Duration
	maxClients     int
	httpAddr       string
	dataDir        string
	profile        string
	encrypt        string
	encryptSet     bool // --encrypt (or RINGMAN_ENCRYPT) was given, maybe empty
	label          string
	requirepass    string
	apiToken       string
	logLevel       string
	logFormat      string
	partitions     int
	load           float64
	replication    int
	leaveTimeout   time.Duration
	tombstoneTTL   time.Duration
	maxClockOffset time.Duration
	tableDir       string
}

func newServeCmd() *cobra.Command {
	o := serveOptions{}
	hostname, _ := os.Hostname()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a node: join the cluster, answer lookups over RESP and HTTP",
		Long: `Run a ringman node. It joins the gossip cluster, advertises the instances
given with --service, and answers lookups over the Redis protocol (for nginx)
and HTTP. Every flag can also be set with an environment variable
RINGMAN_<FLAG_NAME>, e.g. RINGMAN_REDIS_ADDR for --redis-addr.

SIGINT/SIGTERM drain the node, leave the cluster gracefully (bounded by
--leave-timeout) and exit 0; a second signal exits at once.`,
		Args: cobra.NoArgs,
		PreRunE: func(cmd *cobra.Command, args []string) error {
			return flagsFromEnv(cmd.Flags())
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.encryptSet = cmd.Flags().Changed("encrypt")
			return serve(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.SortFlags = false
	f.StringVar(&o.name, "name", hostname, "node name, unique in the cluster and stable across restarts")
	f.StringVar(&o.bind, "bind", "0.0.0.0:7946", "gossip address (TCP and UDP)")
	f.StringVar(&o.advertise, "advertise", "", "gossip address other nodes reach this one at (default: from --bind)")
	f.StringSliceVar(&o.join, "join", nil, "gossip address of a node to join; repeatable; retried in the background")
	f.StringSliceVar(&o.services, "service", nil, "instance this node fronts, NAME=HOST:PORT (or HOST:PORT for the default service); repeatable")
	f.StringVar(&o.defaultService, "default-service", "web", "service for lookups that name none (RESP db 0)")
	f.StringSliceVar(&o.dbs, "db", nil, "RESP database to service mapping, N=NAME (SELECT N); repeatable")
	f.StringVar(&o.check, "check", "", "health-check URL of the local instance; the node drains while it fails")
	f.DurationVar(&o.checkInterval, "check-interval", 2*time.Second, "time between health checks")
	f.DurationVar(&o.checkTimeout, "check-timeout", time.Second, "timeout of one health check")
	f.StringVar(&o.redisAddr, "redis-addr", "127.0.0.1:6380", "RESP address, host:port or unix:/path/ringman.sock")
	f.StringVar(&o.socketMode, "socket-mode", "0660", "file mode of the RESP unix socket")
	f.DurationVar(&o.idleTimeout, "idle-timeout", 5*time.Minute, "close RESP connections idle this long")
	f.IntVar(&o.maxClients, "max-clients", 10000, "RESP connections served at once; one more gets an error and is closed (0: no bound)")
	f.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:7380", "HTTP API address")
	f.StringVar(&o.dataDir, "data-dir", "ringman-data", "directory of the node's data file")
	f.StringVar(&o.profile, "profile", "lan", "gossip timing profile: lan, wan or fast (one datacenter, ~1 s failure detection)")
	f.StringVar(&o.encrypt, "encrypt", "", "gossip encryption key, base64 (from 'ringman keygen')")
	f.StringVar(&o.label, "label", "", "cluster label; nodes with different labels never merge")
	f.StringVar(&o.requirepass, "requirepass", "", "password RESP clients must AUTH with")
	f.StringVar(&o.apiToken, "api-token", "", "bearer token required by state-changing HTTP requests")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", "text", "text or json")
	f.IntVar(&o.partitions, "partitions", ring.DefaultPartitions, "ring partitions (must agree across the cluster)")
	f.Float64Var(&o.load, "load", ring.DefaultLoad, "ring load factor, >= 1 (must agree across the cluster)")
	f.IntVar(&o.replication, "replication-factor", ring.DefaultReplicationFactor, "virtual points per instance (must agree across the cluster)")
	f.DurationVar(&o.leaveTimeout, "leave-timeout", 5*time.Second, "how long a graceful leave may take")
	f.DurationVar(&o.tombstoneTTL, "tombstone-ttl", hostmap.DefaultTombstoneTTL, "how long deleted overrides are remembered (longer than any outage after which a node should still learn of a delete)")
	f.StringVar(&o.tableDir, "table-dir", "", "directory to keep a table file per service in, for nginx's native module (nginx/module/FORMAT.md); empty: none")
	f.DurationVar(&o.maxClockOffset, "max-clock-offset", hostmap.DefaultMaxClockOffset, "refuse override versions from other nodes more than this far ahead of the local clock (a merely skewed node's change is applied by a later full-state sync once the clock is within it)")
	return cmd
}

// flagsFromEnv fills every flag not given on the command line from
// RINGMAN_<FLAG_NAME>.
func flagsFromEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		env := "RINGMAN_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = usagef("%s=%q: %v", env, v, e)
			}
		}
	})
	return err
}

// config is serveOptions checked and parsed.
type config struct {
	serveOptions
	settings   ring.Settings
	services   map[string][]string
	dbs        map[int]string
	keys       [][]byte
	socketMode os.FileMode
	gossipIP   string // --bind's IP, resolved
	level      slog.Level
}

func (o serveOptions) parse() (*config, error) {
	c := &config{serveOptions: o}
	c.settings = ring.Settings{Partitions: o.partitions, Load: o.load, ReplicationFactor: o.replication}
	if err := c.settings.Validate(); err != nil {
		return nil, usageError{err}
	}
	if o.name == "" {
		return nil, usagef("--name is empty and the hostname is unknown")
	}
	if err := discovery.ValidateNodeName(o.name); err != nil {
		return nil, usagef("--name: %v", err)
	}
	if err := discovery.ValidateServiceName(o.defaultService); err != nil {
		return nil, usagef("--default-service: %v", err)
	}
	c.services = map[string][]string{}
	for _, s := range o.services {
		name, inst, ok := strings.Cut(s, "=")
		if !ok {
			name, inst = o.defaultService, s
		}
		if err := discovery.ValidateServiceName(name); err != nil {
			return nil, usagef("--service %q: %v", s, err)
		}
		if err := discovery.ValidateInstance(inst); err != nil {
			return nil, usagef("--service %q: %v", s, err)
		}
		c.services[name] = append(c.services[name], inst)
	}
	c.dbs = map[int]string{}
	for _, d := range o.dbs {
		num, name, ok := strings.Cut(d, "=")
		n, err := strconv.Atoi(num)
		if !ok || err != nil || n < 0 || n > 1<<20 || discovery.ValidateServiceName(name) != nil {
			return nil, usagef("--db %q: want N=SERVICE, e.g. 1=thumbs", d)
		}
		c.dbs[n] = name
	}
	if err := c.checkAddrs(); err != nil {
		return nil, err
	}
	switch o.profile {
	case "lan", "wan", "fast":
	default:
		return nil, usagef("--profile %s: want lan, wan or fast", cell(o.profile))
	}
	if o.encryptSet && o.encrypt == "" {
		// What --encrypt "$(cat missing-file)" gives: never a reason to
		// run unencrypted without a word.
		return nil, usagef("--encrypt is empty (a missing or empty key file?): give a key from 'ringman keygen', or leave --encrypt out to run unencrypted")
	}
	if o.encrypt != "" {
		key, err := base64.StdEncoding.DecodeString(o.encrypt)
		if err != nil {
			return nil, usagef("--encrypt: not base64: %v (make one with 'ringman keygen')", err)
		}
		if l := len(key); l != 16 && l != 24 && l != 32 {
			return nil, usagef("--encrypt: key is %d bytes, want 16, 24 or 32 (make one with 'ringman keygen')", l)
		}
		c.keys = [][]byte{key}
	}
	mode, err := strconv.ParseUint(o.socketMode, 8, 32)
	if err != nil || mode > 0o777 {
		return nil, usagef("--socket-mode %q: want an octal file mode such as 0660", o.socketMode)
	}
	c.socketMode = os.FileMode(mode)
	if err := c.level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return nil, usagef("--log-format %q: want text or json", o.logFormat)
	}
	if o.maxClients < 0 {
		return nil, usagef("--max-clients must not be negative (0 means no bound), got %d", o.maxClients)
	}
	if o.tableDir != "" {
		if err := tablefile.CheckDir(o.tableDir); err != nil {
			return nil, usagef("--table-dir %s: %v", cell(o.tableDir), err)
		}
	}
	for flag, d := range map[string]time.Duration{"--check-interval": o.checkInterval, "--check-timeout": o.checkTimeout, "--idle-timeout": o.idleTimeout, "--leave-timeout": o.leaveTimeout, "--tombstone-ttl": o.tombstoneTTL, "--max-clock-offset": o.maxClockOffset} {
		if d <= 0 {
			return nil, usagef("%s must be positive, got %v", flag, d)
		}
	}
	return c, nil
}

// defaultGossipPort is the port of --bind's default, which a --join
// address most likely means when it has none.
const defaultGossipPort = "7946"

// checkAddrs checks every address flag and the --check URL, so that a
// mistake is a usage error before anything (the data dir, a listener) is
// created.
func (c *config) checkAddrs() error {
	ip, err := checkHostPort("--bind", c.bind)
	if err != nil {
		return err
	}
	c.gossipIP = ip
	if c.advertise != "" {
		ip, err := checkHostPort("--advertise", c.advertise)
		if err != nil {
			return err
		}
		if net.ParseIP(ip).IsUnspecified() {
			return usagef("--advertise %s: must be an address other nodes can reach, not %s", cell(c.advertise), ip)
		}
	}
	for _, j := range c.join {
		if err := checkJoin(strings.TrimSpace(j)); err != nil {
			return err
		}
	}
	if path, ok := strings.CutPrefix(c.redisAddr, "unix:"); ok {
		if path == "" {
			return usagef("--redis-addr unix: needs a socket path, e.g. unix:/run/ringman/ringman.sock")
		}
	} else if _, err := checkHostPort("--redis-addr", c.redisAddr); err != nil {
		return err
	}
	if strings.HasPrefix(c.httpAddr, "unix:") {
		return usagef("--http-addr %s: want host:port (the HTTP API does not listen on unix sockets)", cell(c.httpAddr))
	}
	if _, err := checkHostPort("--http-addr", c.httpAddr); err != nil {
		return err
	}
	if c.check != "" {
		u, err := url.Parse(c.check)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usagef("--check %s: want http://host[:port]/path or https://...", cell(c.check))
		}
	}
	return nil
}

// checkHostPort checks a listening or advertised address: host:port with a
// port from 0 (the system picks one) to 65535, and a host that is an IP or
// a name that resolves. It returns the host's IP (preferring IPv4, as
// discovery does; an empty host is every interface).
func checkHostPort(flag, addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", usagef("%s %s: want host:port", flag, cell(addr))
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", usagef("%s %s: port must be a number from 0 to 65535", flag, cell(addr))
	}
	if host == "" {
		return "0.0.0.0", nil
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.String(), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil || len(ips) == 0 {
		return "", usagef("%s %s: cannot resolve %s", flag, cell(addr), cell(host))
	}
	for _, ip := range ips {
		if ip.IP.To4() != nil {
			return ip.IP.String(), nil
		}
	}
	return ips[0].IP.String(), nil
}

// checkJoin checks a --join address. Seeds are resolved when joined (and
// retried), so a name need not resolve now; a missing port would make
// memberlist use this node's own gossip port, which is rarely what is
// meant, so it is refused with the address to write instead.
func checkJoin(addr string) error {
	if addr == "" {
		return nil // discovery skips empty seeds
	}
	bare := strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
	if !strings.Contains(addr, ":") || (strings.Contains(bare, ":") && net.ParseIP(bare) != nil) {
		return usagef("--join %s: no port (the gossip port is %s by default: %s)", cell(addr), defaultGossipPort, net.JoinHostPort(bare, defaultGossipPort))
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return usagef("--join %s: want host:port of a node's gossip address, e.g. 10.0.0.1:%s", cell(addr), defaultGossipPort)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return usagef("--join %s: port must be a number from 1 to 65535", cell(addr))
	}
	return nil
}

func newLogger(c *config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.level}
	if c.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs a node until a signal or an API leave, then shuts it down.
func serve(ctx context.Context, o serveOptions, stdout, stderr io.Writer) error {
	c, err := o.parse()
	if err != nil {
		return err
	}
	log := newLogger(c, stderr)
	started := time.Now()

	st, err := store.Open(c.dataDir)
	if err != nil {
		return err
	}
	defer st.Close()
	// Metrics that are recorded as they happen (commits, replication,
	// ring changes) start here; the rest is read when scraped.
	m := metrics.New()
	st.OnCommit(m.ObserveCommit)

	var flagKey []byte
	if len(c.keys) > 0 {
		flagKey = c.keys[0]
	}
	keys, keySource, keyWarning, err := startKeys(st, flagKey)
	if err != nil {
		return err
	}
	if keyWarning != "" {
		log.Warn(keyWarning)
	}

	overrides, err := hostmap.Open(st.DB(), hostmap.Options{Node: c.name, TombstoneTTL: c.tombstoneTTL, MaxClockOffset: c.maxClockOffset, Logger: log,
		OnCommit: m.ObserveCommit, OnReplicated: m.ObserveReplication})
	if err != nil {
		return fmt.Errorf("data file %s: %w", st.Path(), err)
	}
	defer overrides.Close()

	rt, err := router.New(c.settings, c.defaultService)
	if err != nil {
		return usageError{err}
	}
	rt.SetOverrides(overrides)
	services := []string{c.defaultService}
	for _, s := range c.dbs {
		services = append(services, s)
	}
	// A --db names its service, so it exists though no instance of it may
	// be live yet: lookups on it are misses, not unknown services, on
	// every protocol.
	rt.Know(services...)
	// The table files start once the node is ready (see WriterConfig.Ready);
	// ready is set below, when /readyz exists.
	var readyRef atomic.Pointer[readiness]
	var tables *tablefile.Writer
	if c.tableDir != "" {
		tables, err = tablefile.NewWriter(tablefile.WriterConfig{Dir: c.tableDir, Router: rt, Services: services, Logger: log, OnWrite: m.TableWritten,
			Ready: func() bool {
				r := readyRef.Load()
				if r == nil {
					return false
				}
				ok, _ := r.check()
				return ok
			}})
		if err != nil {
			return err
		}
		go tables.Run()
		defer tables.Close() // on errors; a shutdown stops it first
	}
	var published atomic.Bool
	onChange := func(live map[string][]string) {
		changes, err := rt.Update(live)
		if err != nil {
			log.Error("ring rebuild failed; keeping the previous ring", "err", err)
		}
		m.RingsChanged(changes, live)
		for _, ch := range changes {
			// One line per ring change, next to discovery's line for the
			// membership change that caused it.
			log.Info("ring changed", "service", ch.Service, "added", ch.Added, "removed", ch.Removed,
				"keys_moved", fmt.Sprintf("%.1f%%", 100*ch.Moved), "took", ch.Took.Round(time.Microsecond))
		}
		published.Store(true)
		if tables != nil {
			tables.Changed()
		}
	}
	// The peers discovery will rejoin besides the seeds, for /readyz's
	// reason (discovery loads them again: it owns them).
	knownPeers, _ := st.LoadPeers()
	node, err := discovery.Start(discovery.Config{
		Name:          c.name,
		BindAddr:      c.bind,
		AdvertiseAddr: c.advertise,
		Profile:       c.profile,
		Label:         c.label,
		Keys:          keys,
		KeyStore:      st,
		Services:      c.services,
		Fingerprint:   c.settings.Fingerprint(),
		Version:       version,
		Seeds:         c.join,
		Peers:         st,
		Check:         discovery.Check{URL: c.check, Interval: c.checkInterval, Timeout: c.checkTimeout},
		SharedState:   overrides,
		Logger:        log,
		OnChange:      onChange,
	})
	if err != nil {
		return fmt.Errorf("start gossip: %w", err)
	}
	defer node.Shutdown()
	overrides.SetBroadcast(node.Broadcast)

	resp, err := redisapi.Listen(redisapi.Config{
		Addr:        c.redisAddr,
		SocketMode:  c.socketMode,
		Router:      rt,
		DBs:         c.dbs,
		RequirePass: c.requirepass,
		IdleTimeout: c.idleTimeout,
		Version:     version,
		Members:     func() int { return len(node.Members()) },
		MaxClients:  c.maxClients,
		Logger:      log,
	})
	if err != nil {
		return fmt.Errorf("start RESP server: %w", err)
	}
	defer resp.Close()

	httpLn, err := net.Listen("tcp", c.httpAddr)
	if err != nil {
		return fmt.Errorf("start HTTP API: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	httpLookups := &httpapi.LookupCounters{}
	if err := m.Register(reg, metrics.Sources{
		Version:    version,
		Commit:     commit,
		RESP:       resp.Stats,
		MaxClients: c.maxClients,
		HTTP:       httpLookups,
		Rings:      rt.Rings,
		Services:   services,
		Members:    node.Members,
		Overrides:  overrides,
	}); err != nil {
		httpLn.Close()
		return fmt.Errorf("metrics: %w", err)
	}
	ready := &readiness{published: &published, node: node, rt: rt, seeds: c.join, knownPeers: len(knownPeers)}
	readyRef.Store(ready)
	leaveReq := make(chan struct{})
	var leaveOnce sync.Once
	api := httpapi.New(httpapi.Config{
		Router:    rt,
		Cluster:   node,
		Overrides: overrides,
		Token:     c.apiToken,
		Keyring:   node,
		Leave:     func() { leaveOnce.Do(func() { close(leaveReq) }) },
		Registry:  reg,
		Lookups:   httpLookups,
		Logger:    log,
		Ready:     ready.check,
	})
	httpSrv := &http.Server{
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
	go func() { serveErr <- resp.Serve() }()
	go func() { serveErr <- httpSrv.Serve(httpLn) }()

	encryption := "no"
	if node.Encrypted() {
		encryption = fmt.Sprintf("yes, %d keys from %s", len(keys), keySource)
		if len(keys) == 1 {
			encryption = "yes, 1 key from " + keySource
		}
	}
	warnings := protectedMode(httpLn.Addr().String(), resp.Addr(), c.apiToken != "", c.requirepass != "")
	// The bound port is --bind's, or the advertised one when the system
	// picked it (port 0).
	_, gossipPort, _ := net.SplitHostPort(c.bind)
	if _, p, err := net.SplitHostPort(node.Addr()); err == nil && gossipPort == "0" {
		gossipPort = p
	}
	warnings = append(warnings, gossipWarning(net.JoinHostPort(c.gossipIP, gossipPort), node.Encrypted())...)
	for _, w := range warnings {
		log.Warn(w)
	}
	printBanner(stdout, c, node.Addr(), encryption, resp.Addr(), httpLn.Addr().String(), st.Path(), warnings)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	var reason string
	select {
	case s := <-sigs:
		reason = "signal " + s.String()
	case <-leaveReq:
		reason = "leave requested through the API"
	case err := <-serveErr:
		return fmt.Errorf("listener stopped: %w", err)
	case <-ctx.Done():
		reason = "context cancelled"
	}
	ready.stopping.Store(true)
	if tables != nil {
		// Before the drain: the tables stay as the cluster was, so that
		// nginx routes on while ringman restarts (with --table-dir nginx
		// does not ask this node; its module has its own max_stale).
		tables.Close()
	}
	log.Info("shutting down: draining and leaving the cluster", "reason", reason, "timeout", c.leaveTimeout, "uptime", time.Since(started).Round(time.Second))
	go func() {
		s := <-sigs
		log.Warn("second signal: exiting at once", "signal", s.String())
		os.Exit(exitFailure)
	}()

	deadline := time.Now().Add(c.leaveTimeout)
	if err := node.SetDraining(true); err != nil {
		log.Warn("drain before leave failed", "err", err)
	}
	if err := node.Leave(time.Until(deadline)); err != nil {
		log.Warn("graceful leave did not complete", "err", err)
	}
	node.Shutdown()
	shutCtx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	httpSrv.Shutdown(shutCtx)
	resp.Close()
	log.Info("stopped")
	return nil
}

// readiness is /readyz: a node is ready once it has joined its cluster
// (a seed or known peer answered, another node joined it, or it has none to
// join) and its published rings show the cluster as gossip sees it, so
// that a client told "ready" gets the cluster's answers, not those of a
// node alone. Once ready it stays ready (members come and go: that is
// routing, not readiness) until shutdown begins.
type readiness struct {
	published  *atomic.Bool // the first rings are built
	node       *discovery.Node
	rt         *router.Router
	seeds      []string
	knownPeers int
	ready      atomic.Bool
	stopping   atomic.Bool
}

func (r *readiness) check() (bool, string) {
	switch {
	case r.stopping.Load():
		return false, "shutting down: draining and leaving the cluster"
	case r.ready.Load():
		return true, ""
	case !r.published.Load():
		return false, "rings not published yet"
	case !r.node.Joined():
		return false, r.notJoined()
	}
	if ok, why := ringsMatch(r.rt.Rings(), r.node.Live()); !ok {
		return false, why
	}
	r.ready.Store(true)
	return true, ""
}

func (r *readiness) notJoined() string {
	var b strings.Builder
	b.WriteString("not joined yet: no answer from ")
	switch {
	case len(r.seeds) > 0 && r.knownPeers > 0:
		fmt.Fprintf(&b, "the seeds (--join %s) or the %d known peers", strings.Join(r.seeds, ", "), r.knownPeers)
	case len(r.seeds) > 0:
		fmt.Fprintf(&b, "the seeds (--join %s)", strings.Join(r.seeds, ", "))
	default:
		fmt.Fprintf(&b, "the %d known peers saved in the data file", r.knownPeers)
	}
	b.WriteString("; retrying in the background")
	return b.String()
}

// ringsMatch reports whether the published rings hold exactly the live
// instances, and if not, which service differs.
func ringsMatch(rings map[string]*ring.Ring, live map[string][]string) (bool, string) {
	for _, service := range slices.Sorted(maps.Keys(live)) {
		if !slices.Equal(rings[service].Instances(), live[service]) {
			return false, fmt.Sprintf("the ring of service %s is not rebuilt yet with its %d live instances", service, len(live[service]))
		}
	}
	for service, rg := range rings {
		if _, ok := live[service]; !ok && rg.Len() > 0 {
			return false, fmt.Sprintf("the ring of service %s still has instances that are gone", service)
		}
	}
	return true, ""
}

func printBanner(w io.Writer, c *config, gossipAddr, encryption, respAddr, httpAddr, dataFile string, warnings []string) {
	var svc []string
	for name, insts := range c.services {
		for _, i := range insts {
			svc = append(svc, name+"="+i)
		}
	}
	sort.Strings(svc)
	if len(svc) == 0 {
		svc = []string{"none (router only)"}
	}
	label := c.label
	if label == "" {
		label = "none"
	}
	// One write, so that a reader never sees half a banner.
	var b strings.Builder
	fmt.Fprintf(&b, `ringman %s running
  node name:  %s
  gossip:     %s (bind %s, profile %s, label: %s)
  encrypted:  %s
  RESP:       %s (default service %s)
  HTTP API:   http://%s
  services:   %s
  data file:  %s
`, version, c.name, gossipAddr, c.bind, c.profile, label, encryption, respAddr, c.defaultService, httpAddr, strings.Join(svc, ", "), dataFile)
	if c.tableDir != "" {
		fmt.Fprintf(&b, "  tables:     %s\n", c.tableDir)
	}
	for _, warning := range warnings {
		fmt.Fprintf(&b, "  WARNING:    %s\n", warning)
	}
	io.WriteString(w, b.String())
}

// protectedMode returns a warning for each listener that other hosts can
// reach (not loopback, not a unix socket) and that has no secret: the API
// without --api-token, RESP without --requirepass. Like Redis's protected
// mode, but it warns instead of refusing: binding a private address is
// often meant (nginx on another host), and it is never silent.
func protectedMode(httpAddr, respAddr string, token, pass bool) []string {
	var out []string
	if where, ok := reachable(httpAddr); ok && !token {
		out = append(out, fmt.Sprintf("the HTTP API on %s is reachable from other hosts and has no --api-token: "+
			"anyone who can reach it can change overrides and gossip keys, drain or stop this node, and read the gossip keys", where))
	}
	if where, ok := reachable(respAddr); ok && !pass {
		out = append(out, fmt.Sprintf("RESP on %s is reachable from other hosts and has no --requirepass: "+
			"anyone who can reach it can look up routes and list instances", where))
	}
	return out
}

// reachable reports whether a listener's address (as the listener gives
// it: an IP, or unix:/path) accepts connections from other hosts, and
// describes it.
func reachable(addr string) (string, bool) {
	if strings.HasPrefix(addr, "unix:") {
		return addr, false
	}
	host, _, err := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	switch {
	case err != nil || ip == nil:
		return addr, true // unknown: say so rather than stay silent
	case ip.IsUnspecified():
		return addr + " (every interface)", true
	}
	return addr, !ip.IsLoopback()
}

// gossipWarning returns a warning when gossip, bound to bindAddr, is
// reachable from other hosts and not encrypted: anyone who reaches the
// port can join the cluster and advertise instances that get traffic.
func gossipWarning(bindAddr string, encrypted bool) []string {
	if where, ok := reachable(bindAddr); ok && !encrypted {
		return []string{fmt.Sprintf("gossip on %s is reachable from other hosts and not encrypted (no --encrypt): "+
			"anyone who can reach it can join the cluster, advertise instances that receive traffic, and change overrides", where)}
	}
	return nil
}
