package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"ringman/discovery"
	"ringman/hostmap"
	"ringman/ring"
	"ringman/tablefile"
)

// Defaults of Config, which are also `ringman serve`'s flag defaults
// (README: `ringman serve` flags).
const (
	DefaultGossipPort                = "7946"
	DefaultBind                      = "0.0.0.0:" + DefaultGossipPort
	DefaultService                   = "web"
	DefaultCheckInterval             = 2 * time.Second
	DefaultCheckTimeout              = time.Second
	DefaultCheckRise                 = 2
	DefaultCheckFall                 = 3
	DefaultCheckStatus               = "200-399"
	DefaultRedisAddr                 = "127.0.0.1:6380"
	DefaultSocketMode    os.FileMode = 0o660
	DefaultIdleTimeout               = 5 * time.Minute
	DefaultMaxClients                = 10000
	DefaultHTTPAddr                  = "127.0.0.1:7380"
	DefaultDataDir                   = "ringman-data"
	DefaultProfile                   = "lan"
	DefaultLeaveTimeout              = 5 * time.Second
)

// Config describes one node. Start from DefaultConfig: a zero duration is
// refused, not read as a default. Most fields are the `ringman serve` flag
// of the same name, and Validate's errors name fields by those flags, which
// is what the README documents.
type Config struct {
	// Name is unique in the cluster and stable across restarts (--name;
	// serve's default is the hostname). See discovery.ValidateNodeName.
	Name string
	// Bind is the gossip address, host:port, TCP and UDP; port 0 lets the
	// system pick one (GossipAddr says which).
	Bind string
	// Advertise, when set, is the host:port other nodes reach this one at.
	Advertise string
	// Join are seeds' gossip addresses, joined and retried in the background.
	Join []string
	// Services are the instances this node fronts: service -> host:ports.
	Services map[string][]string
	// DefaultService answers lookups that name no service (RESP db 0).
	DefaultService string
	// DBs maps RESP database numbers (SELECT n) to services.
	DBs map[int]string
	// Check, when set, is an http(s) URL polled every CheckInterval (each
	// try bounded by CheckTimeout); the node drains after CheckFall probes
	// in a row fail and undrains after CheckRise in a row pass. A probe
	// passes when the status is within CheckStatus ("200-399"; redirects
	// are not followed).
	Check         string
	CheckInterval time.Duration
	CheckTimeout  time.Duration
	CheckRise     int
	CheckFall     int
	CheckStatus   string
	// SlowStart, when set, ramps this node's instances to their full
	// weight over this long (10 steps) at start and after each undrain.
	SlowStart time.Duration
	// RedisAddr is the RESP listener: host:port (port 0: the system picks)
	// or unix:/path, created with SocketMode.
	RedisAddr  string
	SocketMode os.FileMode
	// IdleTimeout closes RESP connections idle this long.
	IdleTimeout time.Duration
	// MaxClients bounds the RESP connections served at once; 0: no bound.
	MaxClients int
	// HTTPAddr is the HTTP API's host:port (port 0: the system picks).
	HTTPAddr string
	// DataDir holds the node's data file (overrides, known peers, keyring).
	DataDir string
	// Profile is a gossip timing profile: discovery.ProfileNames.
	Profile string
	// EncryptKey, when set, is a gossip key of 16, 24 or 32 bytes. It seeds
	// the keyring saved in the data file, which wins afterwards (see
	// startKeys).
	EncryptKey []byte
	// Label keeps clusters apart: nodes with different labels never merge.
	Label string
	// RequirePass is the password RESP clients must AUTH with; "": none.
	RequirePass string
	// APIToken is the bearer token of state-changing HTTP requests; "": none.
	APIToken string
	// Ring are the ring settings (--partitions, --load,
	// --replication-factor); they must agree across the cluster.
	Ring ring.Settings
	// LeaveTimeout bounds the graceful leave of Shutdown.
	LeaveTimeout time.Duration
	// TombstoneTTL is how long deleted overrides are remembered.
	TombstoneTTL time.Duration
	// MaxClockOffset refuses override versions from other nodes more than
	// this far ahead of the local clock.
	MaxClockOffset time.Duration
	// TableDir, when set, is where a table file per service is kept for
	// nginx's native module.
	TableDir string
	// Version and Commit are what the node advertises and reports (gossip
	// metadata, RESP INFO, metrics).
	Version string
	Commit  string
	// Logger receives every log line of the node. Nil: slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every default set; Name and the
// instances are the caller's.
func DefaultConfig() Config {
	return Config{
		Bind:           DefaultBind,
		DefaultService: DefaultService,
		CheckInterval:  DefaultCheckInterval,
		CheckTimeout:   DefaultCheckTimeout,
		CheckRise:      DefaultCheckRise,
		CheckFall:      DefaultCheckFall,
		CheckStatus:    DefaultCheckStatus,
		RedisAddr:      DefaultRedisAddr,
		SocketMode:     DefaultSocketMode,
		IdleTimeout:    DefaultIdleTimeout,
		MaxClients:     DefaultMaxClients,
		HTTPAddr:       DefaultHTTPAddr,
		DataDir:        DefaultDataDir,
		Profile:        DefaultProfile,
		Ring:           ring.DefaultSettings(),
		LeaveTimeout:   DefaultLeaveTimeout,
		TombstoneTTL:   hostmap.DefaultTombstoneTTL,
		MaxClockOffset: hostmap.DefaultMaxClockOffset,
		Version:        "dev",
		Commit:         "unknown",
	}
}

// ConfigError is a Config that Validate (or Start) refused: a mistake of
// whoever wrote it, not of the machine it runs on.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func configErrorf(format string, args ...any) error {
	return &ConfigError{fmt.Errorf(format, args...)}
}

// Validate checks c before anything (the data dir, a listener) is
// created, resolving the listening addresses' host names. Its errors are
// *ConfigError, one line each.
func (c Config) Validate() error {
	_, err := c.validate(context.Background())
	return err
}

// validate is Validate, returning Bind's IP (for the gossip warning).
func (c Config) validate(ctx context.Context) (gossipIP string, err error) {
	if err := c.Ring.Validate(); err != nil {
		return "", &ConfigError{err}
	}
	if c.Name == "" {
		return "", configErrorf("--name is empty and the hostname is unknown")
	}
	if err := discovery.ValidateNodeName(c.Name); err != nil {
		return "", configErrorf("--name: %v", err)
	}
	if err := discovery.ValidateServiceName(c.DefaultService); err != nil {
		return "", configErrorf("--default-service: %v", err)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Services)) {
		for _, inst := range c.Services[name] {
			if _, _, err := ParseService(name+"="+inst, c.DefaultService); err != nil {
				return "", configErrorf("--service %q: %v", name+"="+inst, err)
			}
		}
	}
	for _, n := range slices.Sorted(maps.Keys(c.DBs)) {
		if !validDB(n, c.DBs[n]) {
			return "", configErrorf("--db %q: %s", strconv.Itoa(n)+"="+c.DBs[n], dbForm)
		}
	}
	if gossipIP, err = c.checkAddrs(ctx); err != nil {
		return "", err
	}
	if !slices.Contains(discovery.ProfileNames(), c.Profile) {
		return "", configErrorf("--profile %s: want %s", cell(c.Profile), discovery.ProfileChoices())
	}
	if l := len(c.EncryptKey); c.EncryptKey != nil && l != 16 && l != 24 && l != 32 {
		return "", configErrorf("--encrypt: key is %d bytes, want 16, 24 or 32 (make one with 'ringman keygen')", l)
	}
	if c.SocketMode&^0o777 != 0 {
		return "", configErrorf("--socket-mode %#o: want permission bits only, such as 0660", c.SocketMode)
	}
	if c.MaxClients < 0 {
		return "", configErrorf("--max-clients must not be negative (0 means no bound), got %d", c.MaxClients)
	}
	if c.TableDir != "" {
		if err := tablefile.CheckDir(c.TableDir); err != nil {
			return "", configErrorf("--table-dir %s: %v", cell(c.TableDir), err)
		}
	}
	for _, d := range []struct {
		flag string
		d    time.Duration
	}{
		{"--check-interval", c.CheckInterval}, {"--check-timeout", c.CheckTimeout}, {"--idle-timeout", c.IdleTimeout},
		{"--leave-timeout", c.LeaveTimeout}, {"--tombstone-ttl", c.TombstoneTTL}, {"--max-clock-offset", c.MaxClockOffset},
	} {
		if d.d <= 0 {
			return "", configErrorf("%s must be positive, got %v", d.flag, d.d)
		}
	}
	if c.SlowStart < 0 || c.SlowStart > time.Hour {
		return "", configErrorf("--slow-start must be 0 (off) to 1h, got %v", c.SlowStart)
	}
	return gossipIP, nil
}

// ParseService parses --service's NAME=HOST:PORT, or HOST:PORT for
// defaultService (whose name Validate checks, as --default-service), each
// optionally followed by instance attributes: NAME=HOST:PORT,id=ID,weight=N
// (discovery.Instance). The instance comes back in canonical form.
func ParseService(s, defaultService string) (name, instance string, err error) {
	name, instance = defaultService, s
	if first, _, _ := strings.Cut(s, ","); strings.Contains(first, "=") {
		// NAME=HOST:PORT[,attributes]; without NAME=, any "=" is after
		// the first comma.
		name, instance, _ = strings.Cut(s, "=")
		if isInstanceAttr(name) {
			return "", "", fmt.Errorf("%s= is an instance attribute: put it after an instance, as web=10.0.0.5:8080,%s=...", name, name)
		}
		if err := discovery.ValidateServiceName(name); err != nil {
			return "", "", err
		}
	}
	in, err := discovery.ParseInstance(instance)
	if err != nil {
		if !strings.Contains(instance, ":") {
			// Maybe an attribute ringman does not know, split off by the
			// list flag: say which ones there are.
			return "", "", fmt.Errorf("%w (the attributes after an instance are id= and weight=)", err)
		}
		return "", "", err
	}
	return name, in.String(), nil
}

// isInstanceAttr reports whether key names an instance attribute rather
// than a service.
func isInstanceAttr(key string) bool { return key == "id" || key == "weight" }

// JoinServiceAttrs undoes the comma split of a list flag (--service a,b
// and RINGMAN_SERVICE=a,b give two items): an item that is an instance
// attribute (id=..., weight=...) joins the item before it, so that
// "web=10.0.0.5:8080,id=web-a,weight=2" is one instance.
func JoinServiceAttrs(items []string) []string {
	var out []string
	for _, it := range items {
		key, _, _ := strings.Cut(it, "=")
		if isInstanceAttr(key) && len(out) > 0 {
			out[len(out)-1] += "," + it
			continue
		}
		out = append(out, it)
	}
	return out
}

// dbForm is what --db wants.
const dbForm = "want N=SERVICE, e.g. 1=thumbs"

// ParseDB parses --db's N=SERVICE: RESP database N (SELECT N) is SERVICE.
func ParseDB(s string) (int, string, error) {
	num, service, ok := strings.Cut(s, "=")
	n, err := strconv.Atoi(num)
	if !ok || err != nil || !validDB(n, service) {
		return 0, "", errors.New(dbForm)
	}
	return n, service, nil
}

func validDB(n int, service string) bool {
	return n >= 0 && n <= 1<<20 && discovery.ValidateServiceName(service) == nil
}

// maxCheckStreak bounds --check-rise and --check-fall.
const maxCheckStreak = 100

// ParseStatusRange parses --check-status: "200-399", or one status "200".
func ParseStatusRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(strings.TrimSpace(s), "-")
	lo, err1 := strconv.Atoi(a)
	hi, err2 := lo, error(nil)
	if isRange {
		hi, err2 = strconv.Atoi(b)
	}
	if err1 != nil || err2 != nil || lo < 100 || hi > 599 || lo > hi {
		return 0, 0, errors.New("want a status or a range of statuses within 100-599, e.g. 200-399")
	}
	return lo, hi, nil
}

// checkAddrs checks every address and the health-check URL, and returns
// Bind's IP.
func (c Config) checkAddrs(ctx context.Context) (string, error) {
	gossipIP, err := checkHostPort(ctx, "--bind", c.Bind)
	if err != nil {
		return "", err
	}
	if c.Advertise != "" {
		ip, err := checkHostPort(ctx, "--advertise", c.Advertise)
		if err != nil {
			return "", err
		}
		if net.ParseIP(ip).IsUnspecified() {
			return "", configErrorf("--advertise %s: must be an address other nodes can reach, not %s", cell(c.Advertise), ip)
		}
	}
	for _, j := range c.Join {
		if err := checkJoin(strings.TrimSpace(j)); err != nil {
			return "", err
		}
	}
	if path, ok := strings.CutPrefix(c.RedisAddr, "unix:"); ok {
		if path == "" {
			return "", configErrorf("--redis-addr unix: needs a socket path, e.g. unix:/run/ringman/ringman.sock")
		}
	} else if _, err := checkHostPort(ctx, "--redis-addr", c.RedisAddr); err != nil {
		return "", err
	}
	if strings.HasPrefix(c.HTTPAddr, "unix:") {
		return "", configErrorf("--http-addr %s: want host:port (the HTTP API does not listen on unix sockets)", cell(c.HTTPAddr))
	}
	if _, err := checkHostPort(ctx, "--http-addr", c.HTTPAddr); err != nil {
		return "", err
	}
	if c.Check != "" {
		u, err := url.Parse(c.Check)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", configErrorf("--check %s: want http://host[:port]/path or https://...", cell(c.Check))
		}
	}
	for _, f := range []struct {
		flag string
		n    int
	}{{"--check-rise", c.CheckRise}, {"--check-fall", c.CheckFall}} {
		if f.n < 1 || f.n > maxCheckStreak {
			return "", configErrorf("%s must be 1 to %d probes in a row, got %d", f.flag, maxCheckStreak, f.n)
		}
	}
	if _, _, err := ParseStatusRange(c.CheckStatus); err != nil {
		return "", configErrorf("--check-status %s: %v", cell(c.CheckStatus), err)
	}
	return gossipIP, nil
}

// resolveTimeout bounds resolving one listening address's host name.
const resolveTimeout = 5 * time.Second

// checkHostPort checks a listening or advertised address as discovery
// does (host:port, a port from 0 to 65535, a host that resolves) and returns
// the host's IP, for the flag's one-line error.
func checkHostPort(ctx context.Context, flag, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	ip, _, err := discovery.ParseHostPort(ctx, addr)
	if err != nil {
		return "", configErrorf("%s %s: %v", flag, cell(addr), err)
	}
	return ip, nil
}

// checkJoin checks a seed address. Seeds are resolved when joined (and
// retried), so a name need not resolve now; a missing port would make
// memberlist use this node's own gossip port, which is rarely what is
// meant, so it is refused with the address to write instead.
func checkJoin(addr string) error {
	if addr == "" {
		return nil // discovery skips empty seeds
	}
	bare := strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
	if !strings.Contains(addr, ":") || (strings.Contains(bare, ":") && net.ParseIP(bare) != nil) {
		return configErrorf("--join %s: no port (the gossip port is %s by default: %s)", cell(addr), DefaultGossipPort, net.JoinHostPort(bare, DefaultGossipPort))
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return configErrorf("--join %s: want host:port of a node's gossip address, e.g. 10.0.0.1:%s", cell(addr), DefaultGossipPort)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return configErrorf("--join %s: port must be a number from 1 to 65535", cell(addr))
	}
	return nil
}

// cell returns s as it is when it is plain (printable, no space, quote or
// backslash, not empty), else quoted with its bytes escaped: what a user
// typed stays one unambiguous word of an error line. The same rule as the
// CLI's output columns.
func cell(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return r == ' ' || r == '"' || r == '\\' || r == utf8.RuneError || !strconv.IsPrint(r)
	}) {
		return s
	}
	return strconv.Quote(s)
}
