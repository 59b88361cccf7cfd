package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// Config, its defaults and their validation live here: everything Start
// checks before it binds a port, so that bad input fails at once with one
// line.

// Config describes one node.
type Config struct {
	// Name is unique in the cluster and stable across restarts; see
	// ValidateNodeName for what it may hold (every host name).
	Name string
	// BindAddr is the gossip address, "host:port" (TCP and UDP); port 0
	// picks one. Empty: 0.0.0.0:7946. A host name is resolved once.
	BindAddr string
	// AdvertiseAddr, when set, is the "host:port" other nodes reach this one
	// at; port 0 means the bound port.
	AdvertiseAddr string
	// Profile is "lan" (default), "wan" or "fast".
	Profile string
	// Label keeps clusters apart: nodes with different labels never merge.
	Label string
	// Keys is the gossip keyring (16, 24 or 32 bytes each); the first one
	// encrypts. Empty: gossip is not encrypted.
	Keys [][]byte
	// KeyStore, when set, saves the keyring after each change made with
	// Node.Keys (keys.go).
	KeyStore KeyStore
	// Services are the instances this node fronts: service -> instances,
	// "host:port" with optional attributes (Instance). Those that fit
	// travel in memberlist's node metadata (512 bytes, about 30 instances
	// like "10.0.0.1:8080" next to a 64-character fingerprint); more are
	// fetched from this node by the others (see meta). Start fails, naming
	// the limit, past 1,024 services, 4,096 instances or 64 KiB encoded.
	Services map[string][]string
	// Fingerprint describes the ring settings; peers whose differ are refused.
	Fingerprint string
	// Version is the ringman version, advertised for operators.
	Version string
	// Seeds are joined in the background, retried (backing off up to 5 s)
	// until one answers. A seed that is this node's own gossip address is
	// skipped with a warning; when every seed is, the node is not Joined
	// until another node joins it.
	Seeds []string
	// Peers, when set, remembers known peers so that a restarted node
	// rejoins without seeds: they are tried like seeds at Start, and saved
	// (from the event loop, batched) when the alive members change.
	Peers PeerStore
	// Check, when its URL is set, polls the local instance and drains the
	// node while the check fails.
	Check Check
	// SlowStart, when set, ramps this node's instances up to their full
	// weight over this long, in 10 steps, when the node starts and each
	// time it is undrained, so that a cold instance takes its keys
	// gradually. At most an hour.
	SlowStart time.Duration
	// Logger receives this package's and memberlist's log lines (the
	// latter at the level memberlist tagged them with). Nil: slog.Default().
	Logger *slog.Logger
	// SharedState, when set, is replicated to and merged from every other
	// node: see SharedState. Nil: the node replicates membership only.
	SharedState SharedState
	// OnChange receives the live instances per service after each change
	// of the live set (coalesced): instances sorted and deduplicated,
	// services without live instances absent; the map is the callee's. It
	// is called from one goroutine, never concurrently, and once by Start
	// with this node's own view. It must not call Shutdown.
	OnChange func(live map[string][]string)
}

// Check is an HTTP health check of the local instance.
type Check struct {
	URL      string        // GET, redirects not followed
	Interval time.Duration // default 2s
	Timeout  time.Duration // default 1s
	// Rise is how many probes in a row must pass to pass a failing check
	// (undrain), Fall how many must fail to fail a passing one (drain):
	// default 2 and 3, HAProxy's. The first probe, before the node joins,
	// decides alone.
	Rise, Fall int
	// StatusMin and StatusMax bound the statuses that pass: default 200
	// and 399 (2xx and 3xx, as HAProxy's httpchk).
	StatusMin, StatusMax int
}

const (
	// forgetAfter is how long left and failed members stay in Members().
	forgetAfter = time.Hour
	// metaUpdateTimeout bounds how long SetDraining and Leave wait for
	// memberlist to gossip the new metadata.
	metaUpdateTimeout = 5 * time.Second
	// peerSaveDelay batches the known-peer writes of a burst of joins.
	peerSaveDelay = 2 * time.Second
	// joinBackoffMin and joinBackoffMax bound the wait between background
	// join attempts.
	joinBackoffMin = 250 * time.Millisecond
	joinBackoffMax = 5 * time.Second
	// joinParallel is how many addresses a join contacts at once: known
	// peers may be stale, and a dead host costs a whole TCP timeout.
	joinParallel = 8
	// reconnectEvery is how often the node tries to rejoin one failed
	// member (serf's reconnect): memberlist never contacts a node it declared
	// dead again, so without it a healed partition would stay split.
	reconnectEvery = 10 * time.Second

	defaultBindAddr      = "0.0.0.0:7946"
	defaultCheckInterval = 2 * time.Second
	defaultCheckTimeout  = time.Second
	defaultCheckRise     = 2
	defaultCheckFall     = 3
	defaultCheckStatusLo = 200
	defaultCheckStatusHi = 399
	// maxSlowStart bounds Config.SlowStart.
	maxSlowStart = time.Hour
	// maxCheckStreak bounds Rise and Fall: a longer streak is a typo.
	maxCheckStreak = 100
)

// tunables are the package's timings; tests shorten some of them.
type tunables struct {
	forgetAfter    time.Duration
	pruneEvery     time.Duration
	metaTimeout    time.Duration
	peerSaveDelay  time.Duration
	joinBackoffMin time.Duration
	joinBackoffMax time.Duration
	reconnectEvery time.Duration
	keyTimeout     time.Duration // wait for keyring answers (keys.go)
	// coalesceQuiet and coalesceMax fold bursts of changes into few
	// publishes (coalesce.go).
	coalesceQuiet, coalesceMax time.Duration
	settleDelay                time.Duration // settleLoop (reconnect.go)
	// pushPullInterval, when set, replaces the profile's.
	pushPullInterval time.Duration
	// maxNodes, when set, replaces the profile's MaxNodes.
	maxNodes int
	// wrapTransport, when set, wraps the gossip transport of the node
	// advertised at self (tests cut the network with it).
	wrapTransport func(self string, t memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
}

func defaultTunables() tunables {
	return tunables{
		forgetAfter:    forgetAfter,
		pruneEvery:     time.Minute,
		metaTimeout:    metaUpdateTimeout,
		peerSaveDelay:  peerSaveDelay,
		joinBackoffMin: joinBackoffMin,
		joinBackoffMax: joinBackoffMax,
		reconnectEvery: reconnectEvery,
		keyTimeout:     keyTimeout,
		coalesceQuiet:  coalesceQuiet,
		coalesceMax:    coalesceMax,
		settleDelay:    settleDelay,
	}
}

// settings is a Config checked and completed, with what Start derives from
// it before it binds anything.
type settings struct {
	cfg      Config
	mlc      *memberlist.Config // the profile's timings
	bindIP   string
	bindPort int
	advIP    string // empty: memberlist picks the address to advertise
	advPort  int
	keyring  *memberlist.Keyring // nil: gossip is not encrypted
	// local is what this node advertises; localBytes, its encoding, fits
	// in memberlist's metadata; localServices is the services' encoding
	// when they do not fit in it (nil when they do).
	local         meta
	localBytes    []byte
	localServices []byte
}

// normalize validates cfg, fills in its defaults, resolves its addresses
// and keys, and checks that this node's metadata fits.
func normalize(cfg Config) (settings, error) {
	cfg, err := normalizeConfig(cfg)
	if err != nil {
		return settings{}, err
	}
	s := settings{cfg: cfg}
	if s.mlc, err = memberlistConfig(cfg.Profile); err != nil {
		return settings{}, err
	}
	if s.bindIP, s.bindPort, err = parseHostPort("bind", cfg.BindAddr); err != nil {
		return settings{}, err
	}
	if cfg.AdvertiseAddr != "" {
		if s.advIP, s.advPort, err = parseHostPort("advertise", cfg.AdvertiseAddr); err != nil {
			return settings{}, err
		}
		if net.ParseIP(s.advIP).IsUnspecified() {
			return settings{}, fmt.Errorf("advertise address %q: must be an address other nodes can reach, not %s", cfg.AdvertiseAddr, s.advIP)
		}
	}
	if s.keyring, err = newKeyring(cfg.Keys); err != nil {
		return settings{}, err
	}
	s.local = meta{Fingerprint: cfg.Fingerprint, Version: cfg.Version, Services: cfg.Services}
	if cfg.SlowStart > 0 {
		s.local.Services = withRamp(cfg.Services, 1)
	}
	if s.local, s.localBytes, s.localServices, err = advertise(s.local); err != nil {
		return settings{}, err
	}
	return s, nil
}

// normalizeServices validates services and returns a copy of them, each
// list sorted and deduplicated, without the services that have none.
func normalizeServices(services map[string][]string) (map[string][]string, error) {
	out := make(map[string][]string, len(services))
	for name, insts := range services {
		if err := ValidateServiceName(name); err != nil {
			return nil, err
		}
		canon := make([]string, len(insts))
		for i, inst := range insts {
			var err error
			if canon[i], err = canonicalInstance(inst); err != nil {
				return nil, fmt.Errorf("service %s: %w", name, err)
			}
		}
		if len(canon) > 0 {
			out[name] = sortDedup(canon)
		}
	}
	return out, nil
}

// normalizeConfig validates the fields of cfg that need no lookup and fills
// in defaults.
func normalizeConfig(cfg Config) (Config, error) {
	if err := ValidateNodeName(cfg.Name); err != nil {
		return cfg, err
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = defaultBindAddr
	}
	if len(cfg.Label) > memberlist.LabelMaxSize {
		return cfg, fmt.Errorf("cluster label is %d bytes, over the limit of %d", len(cfg.Label), memberlist.LabelMaxSize)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	services, err := normalizeServices(cfg.Services)
	if err != nil {
		return cfg, err
	}
	cfg.Services = services
	if cfg.SlowStart < 0 || cfg.SlowStart > maxSlowStart {
		return cfg, fmt.Errorf("slow start %v: want 0 (off) to %v", cfg.SlowStart, maxSlowStart)
	}
	var seeds []string
	for _, s := range cfg.Seeds {
		if s = strings.TrimSpace(s); s != "" {
			seeds = append(seeds, s)
		}
	}
	cfg.Seeds = seeds
	if cfg.Check.URL != "" {
		u, err := url.Parse(cfg.Check.URL)
		if err != nil {
			return cfg, fmt.Errorf("health check URL: %w", err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return cfg, fmt.Errorf("health check URL %q: want http://host[:port]/path or https://...", cfg.Check.URL)
		}
		if cfg.Check.Interval < 0 || cfg.Check.Timeout < 0 {
			return cfg, errors.New("health check interval and timeout must not be negative")
		}
		if cfg.Check.Interval == 0 {
			cfg.Check.Interval = defaultCheckInterval
		}
		if cfg.Check.Timeout == 0 {
			cfg.Check.Timeout = defaultCheckTimeout
		}
		c := &cfg.Check
		if c.Rise < 0 || c.Rise > maxCheckStreak || c.Fall < 0 || c.Fall > maxCheckStreak {
			return cfg, fmt.Errorf("health check rise %d and fall %d: want 1 to %d probes", c.Rise, c.Fall, maxCheckStreak)
		}
		if c.Rise == 0 {
			c.Rise = defaultCheckRise
		}
		if c.Fall == 0 {
			c.Fall = defaultCheckFall
		}
		if c.StatusMin == 0 && c.StatusMax == 0 {
			c.StatusMin, c.StatusMax = defaultCheckStatusLo, defaultCheckStatusHi
		}
		if c.StatusMin < 100 || c.StatusMax > 599 || c.StatusMin > c.StatusMax {
			return cfg, fmt.Errorf("health check statuses %d-%d: want a range within 100-599", c.StatusMin, c.StatusMax)
		}
	}
	return cfg, nil
}

// ParseHostPort checks a gossip address as Config.BindAddr and
// Config.AdvertiseAddr take it: "host:port", with a port from 0 (bind: the
// system picks one; advertise: the bound port) to 65535, and a host that is
// an IP or a name that resolves, within ctx. It returns the host's IP,
// because memberlist binds and advertises IPs only: IPv4 first when a name
// has both, as "localhost" usually means 127.0.0.1; an empty host is
// 0.0.0.0. The error is one line for the caller to prefix with what the
// address is for: "want host:port", "port must be a number from 0 to
// 65535" or "cannot resolve HOST".
func ParseHostPort(ctx context.Context, addr string) (ip string, port int, err error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, errors.New("want host:port")
	}
	p, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return "", 0, errors.New("port must be a number from 0 to 65535")
	}
	if host == "" {
		return "0.0.0.0", int(p), nil
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.String(), int(p), nil
	}
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil || len(addrs) == 0 {
		return "", 0, fmt.Errorf("cannot resolve %s", host)
	}
	for _, a := range addrs {
		if a.IP.To4() != nil {
			return a.IP.String(), int(p), nil
		}
	}
	return addrs[0].IP.String(), int(p), nil
}

// parseHostPort is ParseHostPort for Start's addresses: what says which.
func parseHostPort(what, addr string) (string, int, error) {
	ip, port, err := ParseHostPort(context.Background(), addr)
	if err != nil {
		return "", 0, fmt.Errorf("%s address %q: %w", what, addr, err)
	}
	return ip, port, nil
}

// newKeyring checks key sizes and builds memberlist's keyring; the first key
// is primary. No keys: nil (gossip unencrypted).
func newKeyring(keys [][]byte) (*memberlist.Keyring, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	for i, k := range keys {
		if err := memberlist.ValidateKey(k); err != nil {
			return nil, fmt.Errorf("gossip key %d of %d is %d bytes; want 16, 24 or 32 (AES-128, AES-192, AES-256)", i+1, len(keys), len(k))
		}
	}
	kr, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	return kr, nil
}
