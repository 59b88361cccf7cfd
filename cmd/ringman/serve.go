package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"ringman/daemon"
	"ringman/discovery"
	"ringman/ring"
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
	checkRise      int
	checkFall      int
	checkStatus    string
	slowStart      time.Duration
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
	def := daemon.DefaultConfig()
	f := cmd.Flags()
	f.SortFlags = false
	f.StringVar(&o.name, "name", hostname, "node name, unique in the cluster and stable across restarts")
	f.StringVar(&o.bind, "bind", def.Bind, "gossip address (TCP and UDP)")
	f.StringVar(&o.advertise, "advertise", "", "gossip address other nodes reach this one at (default: from --bind)")
	f.StringSliceVar(&o.join, "join", nil, "gossip address of a node to join; repeatable; retried in the background")
	f.StringSliceVar(&o.services, "service", nil, "instance this node fronts, NAME=HOST:PORT (or HOST:PORT for the default service), optionally ,id=STABLE-ID,weight=N; repeatable")
	f.StringVar(&o.defaultService, "default-service", def.DefaultService, "service for lookups that name none (RESP db 0)")
	f.StringSliceVar(&o.dbs, "db", nil, "RESP database to service mapping, N=NAME (SELECT N); repeatable")
	f.StringVar(&o.check, "check", "", "health-check URL of the local instance; the node drains while it fails")
	f.DurationVar(&o.checkInterval, "check-interval", def.CheckInterval, "time between health checks")
	f.DurationVar(&o.checkTimeout, "check-timeout", def.CheckTimeout, "timeout of one health check")
	f.IntVar(&o.checkRise, "check-rise", def.CheckRise, "health checks in a row that must pass to undrain the node")
	f.IntVar(&o.checkFall, "check-fall", def.CheckFall, "health checks in a row that must fail to drain the node")
	f.StringVar(&o.checkStatus, "check-status", def.CheckStatus, "HTTP statuses that pass the health check, LO-HI (redirects are not followed)")
	f.DurationVar(&o.slowStart, "slow-start", 0, "ramp this node's instances to their full weight over this long (10 steps) at start and after each undrain; 0: off")
	f.StringVar(&o.redisAddr, "redis-addr", def.RedisAddr, "RESP address, host:port or unix:/path/ringman.sock")
	f.StringVar(&o.socketMode, "socket-mode", fmt.Sprintf("%#o", def.SocketMode), "file mode of the RESP unix socket")
	f.DurationVar(&o.idleTimeout, "idle-timeout", def.IdleTimeout, "close RESP connections idle this long")
	f.IntVar(&o.maxClients, "max-clients", def.MaxClients, "RESP connections served at once; one more gets an error and is closed (0: no bound)")
	f.StringVar(&o.httpAddr, "http-addr", def.HTTPAddr, "HTTP API address")
	f.StringVar(&o.dataDir, "data-dir", def.DataDir, "directory of the node's data file")
	f.StringVar(&o.profile, "profile", def.Profile, profileUsage())
	f.StringVar(&o.encrypt, "encrypt", "", "gossip encryption key, base64 (from 'ringman keygen')")
	f.StringVar(&o.label, "label", "", "cluster label; nodes with different labels never merge")
	f.StringVar(&o.requirepass, "requirepass", "", "password RESP clients must AUTH with")
	f.StringVar(&o.apiToken, "api-token", "", "bearer token required by state-changing HTTP requests")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", "text", "text or json")
	f.IntVar(&o.partitions, "partitions", def.Ring.Partitions, "ring partitions (must agree across the cluster)")
	f.Float64Var(&o.load, "load", def.Ring.Load, "ring load factor, >= 1 (must agree across the cluster)")
	f.IntVar(&o.replication, "replication-factor", def.Ring.ReplicationFactor, "virtual points per instance (must agree across the cluster)")
	f.DurationVar(&o.leaveTimeout, "leave-timeout", def.LeaveTimeout, "how long a graceful leave may take")
	f.DurationVar(&o.tombstoneTTL, "tombstone-ttl", def.TombstoneTTL, "how long deleted overrides are remembered (longer than any outage after which a node should still learn of a delete)")
	f.StringVar(&o.tableDir, "table-dir", "", "directory to keep a table file per service in, for nginx's native module (nginx/module/FORMAT.md); empty: none")
	f.DurationVar(&o.maxClockOffset, "max-clock-offset", def.MaxClockOffset, "refuse override versions from other nodes more than this far ahead of the local clock (a merely skewed node's change is applied by a later full-state sync once the clock is within it)")
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

// profileUsage is --profile's help: every profile, with what its name
// does not say.
func profileUsage() string {
	var names []string
	for _, p := range discovery.Profiles() {
		if p.Summary != "" {
			names = append(names, p.Name+" ("+p.Summary+")")
		} else {
			names = append(names, p.Name)
		}
	}
	return "gossip timing profile: " + strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// config turns the flags into the node's configuration. It checks what
// only flags can get wrong (their syntax); daemon.Start validates the rest.
func (o serveOptions) config(stderr io.Writer) (daemon.Config, error) {
	c := daemon.Config{
		Name:           o.name,
		Bind:           o.bind,
		Advertise:      o.advertise,
		Join:           o.join,
		Services:       map[string][]string{},
		DefaultService: o.defaultService,
		DBs:            map[int]string{},
		Check:          o.check,
		CheckInterval:  o.checkInterval,
		CheckTimeout:   o.checkTimeout,
		CheckRise:      o.checkRise,
		CheckFall:      o.checkFall,
		CheckStatus:    o.checkStatus,
		SlowStart:      o.slowStart,
		RedisAddr:      o.redisAddr,
		IdleTimeout:    o.idleTimeout,
		MaxClients:     o.maxClients,
		HTTPAddr:       o.httpAddr,
		DataDir:        o.dataDir,
		Profile:        o.profile,
		Label:          o.label,
		RequirePass:    o.requirepass,
		APIToken:       o.apiToken,
		Ring:           ring.Settings{Partitions: o.partitions, Load: o.load, ReplicationFactor: o.replication},
		LeaveTimeout:   o.leaveTimeout,
		TombstoneTTL:   o.tombstoneTTL,
		MaxClockOffset: o.maxClockOffset,
		TableDir:       o.tableDir,
		Version:        version,
		Commit:         commit,
	}
	for _, s := range daemon.JoinServiceAttrs(o.services) {
		name, inst, err := daemon.ParseService(s, o.defaultService)
		if err != nil {
			return c, usagef("--service %q: %v", s, err)
		}
		c.Services[name] = append(c.Services[name], inst)
	}
	for _, d := range o.dbs {
		n, name, err := daemon.ParseDB(d)
		if err != nil {
			return c, usagef("--db %q: %v", d, err)
		}
		c.DBs[n] = name
	}
	if o.encryptSet && o.encrypt == "" {
		// What --encrypt "$(cat missing-file)" gives: never a reason to
		// run unencrypted without a word.
		return c, usagef("--encrypt is empty (a missing or empty key file?): give a key from 'ringman keygen', or leave --encrypt out to run unencrypted")
	}
	if o.encrypt != "" {
		key, err := parseGossipKey(o.encrypt)
		if err != nil {
			return c, usagef("--encrypt: %v", err)
		}
		c.EncryptKey = key
	}
	mode, err := strconv.ParseUint(o.socketMode, 8, 32)
	if err != nil || mode > 0o777 {
		return c, usagef("--socket-mode %q: want an octal file mode such as 0660", o.socketMode)
	}
	c.SocketMode = os.FileMode(mode)
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return c, usagef("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch o.logFormat {
	case "text":
		c.Logger = slog.New(slog.NewTextHandler(stderr, opts))
	case "json":
		c.Logger = slog.New(slog.NewJSONHandler(stderr, opts))
	default:
		return c, usagef("--log-format %q: want text or json", o.logFormat)
	}
	return c, nil
}

// serve runs a node until a signal or an API leave, then shuts it down.
func serve(ctx context.Context, o serveOptions, stdout, stderr io.Writer) error {
	c, err := o.config(stderr)
	if err != nil {
		return err
	}
	log := c.Logger
	started := time.Now()
	node, err := daemon.Start(ctx, c)
	var invalid *daemon.ConfigError
	if errors.As(err, &invalid) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	printBanner(stdout, c, node)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	var reason string
	select {
	case s := <-sigs:
		reason = "signal " + s.String()
	case <-node.Done():
		if err := node.Err(); !errors.Is(err, daemon.ErrLeaveRequested) {
			// A listener failed: stop at once, as after a crash.
			if cerr := node.Close(); cerr != nil {
				log.Warn("closing after a listener failed", "err", cerr)
			}
			return err
		}
		reason = "leave requested through the API"
	case <-ctx.Done():
		reason = "context cancelled"
	}
	log.Info("shutting down: draining and leaving the cluster", "reason", reason, "timeout", c.LeaveTimeout, "uptime", time.Since(started).Round(time.Second))
	go func() {
		s := <-sigs
		log.Warn("second signal: exiting at once", "signal", s.String())
		os.Exit(exitFailure)
	}()
	// Background: a cancelled ctx is a reason to stop, not to hurry; the
	// bounds are --leave-timeout and the HTTP API's second.
	err = node.Shutdown(context.Background())
	log.Info("stopped")
	return err
}

// printBanner prints what the node listens on, whether gossip is
// encrypted, and the start-up warnings.
func printBanner(w io.Writer, c daemon.Config, node *daemon.Node) {
	encryption := "no"
	if node.Encrypted() {
		count, source := node.StartKeys()
		encryption = fmt.Sprintf("yes, %d keys from %s", count, source)
		if count == 1 {
			encryption = "yes, 1 key from " + source
		}
	}
	var svc []string
	for name, insts := range c.Services {
		for _, i := range insts {
			svc = append(svc, name+"="+i)
		}
	}
	sort.Strings(svc)
	if len(svc) == 0 {
		svc = []string{"none (router only)"}
	}
	label := c.Label
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
`, c.Version, c.Name, node.GossipAddr(), c.Bind, c.Profile, label, encryption, node.RESPAddr(), c.DefaultService, node.HTTPAddr(),
		strings.Join(svc, ", "), node.DataFile())
	if c.TableDir != "" {
		fmt.Fprintf(&b, "  tables:     %s\n", c.TableDir)
	}
	for _, warning := range node.Warnings() {
		fmt.Fprintf(&b, "  WARNING:    %s\n", warning)
	}
	io.WriteString(w, b.String())
}
