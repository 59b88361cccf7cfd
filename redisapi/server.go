// Package redisapi answers lookups over the Redis protocol (README: Redis protocol), so that
// nginx (ngx_http_redis, lua-resty-redis), redis-cli and any Redis client can
// ask ringman which instance serves a key: GET <key> returns the instance's
// "host:port" as a bulk string, or nil when there is none.
//
// # Databases
//
// SELECT n picks the service that GET, MGET and RING.* look keys up in:
// Config.DBs maps db numbers to services, and db 0 is the router's default
// service unless DBs says otherwise. SELECT of a db number that is not mapped
// fails with "-ERR DB index is out of range" and leaves the connection on the
// db it had: a typo in an nginx config then shows up as an error in nginx's
// log instead of as silent misses. Every connection starts on db 0, so
// ngx_http_redis's "select 0" always succeeds.
//
// # Authentication
//
// With Config.RequirePass set, every command except AUTH, HELLO (which can
// carry AUTH) and QUIT first needs AUTH, like Redis 7 (-NOAUTH, also for PING).
// Unknown commands and wrong arity are reported before that, as Redis does.
//
// # Limits
//
// One request is at most MaxRequestBytes and MaxArgs arguments; past that the
// client gets "-ERR Protocol error: ..." and the connection is closed. Each
// connection's input buffer starts at 4 KiB and never exceeds MaxRequestBytes;
// its output is written out whenever 64 KiB of replies are pending, and a
// client that does not read its replies is not read from until it does.
// Idle connections are closed after Config.IdleTimeout. With
// Config.MaxClients set, a connection beyond that many gets "-ERR max number
// of clients reached" and is closed, as in Redis.
//
// # Counters
//
// Stats reports what the server did (lookups by source, lookup errors,
// connections, closes for limits) for the metrics endpoint, which reads it
// when scraped. Counting on the lookup path is one atomic add on a counter
// shard of the connection's own (no lock, no allocation, and connections on
// different cores do not share a cache line); Stats sums the shards.
//
// # Engines
//
// On Linux, connections are served by an event loop in the style of Redis's
// ae: one goroutine locked to its OS thread waits in epoll for every
// connection at once, reads each readable connection once, and then writes
// each one's replies once. A goroutine per connection on Go's netpoller
// costs an extra read per request that fails with EAGAIN, a park and a
// wake-up, which made up most of the server's CPU time for unpipelined
// lookups (eventloop_linux.go has the details). Elsewhere, each connection
// gets its own goroutine (serveConn, goroutines.go). Both engines take the
// same step whenever input arrives (conn.serve: parse, run, reply, make
// room) and share the commands and the limits; what differs is only how
// they wait for sockets. The tests run against both.
//
// # Why not redcon's Server
//
// github.com/tidwall/redcon's Server reads into a buffer that grows without
// bound while a request is incomplete (it would wait for the 2 GiB of a
// "$2147483648" bulk), copies every request and allocates its arguments, and
// its zero-copy ReadNextCommand panics on some inputs ("$-2"). This package
// keeps redcon's reply encoders (redcon.Append*) and has its own small reader:
// bounded, resumable, allocation-free, and fuzzed (FuzzServe).
package redisapi

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"ringman/router"
)

// Defaults for Config fields left zero.
const (
	// DefaultIdleTimeout exceeds nginx's keepalive_timeout default (60 s),
	// so that nginx, not ringman, closes its pooled connections.
	DefaultIdleTimeout = 5 * time.Minute
	// nginxKeepaliveTimeout is nginx's default keepalive_timeout, which its
	// upstream keepalive pools (and lua-resty-redis's set_keepalive) follow.
	nginxKeepaliveTimeout = 60 * time.Second
	// DefaultSocketMode lets the owner and its group (nginx's workers) connect.
	DefaultSocketMode os.FileMode = 0o660
)

// Config configures a Server.
type Config struct {
	// Addr is "host:port" ("127.0.0.1:6380", port 0 picks one) or
	// "unix:/path/ringman.sock".
	Addr string
	// SocketMode is the unix socket's file mode; 0 means DefaultSocketMode.
	SocketMode os.FileMode
	// Router answers the lookups. Required.
	Router *router.Router
	// DBs maps SELECT numbers to service names. db 0 is
	// Router.DefaultService() unless given here.
	DBs map[int]string
	// RequirePass, when set, makes every command but AUTH, HELLO and QUIT
	// need AUTH first.
	RequirePass string
	// IdleTimeout closes connections that send nothing for this long.
	// 0 means DefaultIdleTimeout; a negative value never closes them.
	IdleTimeout time.Duration
	// Version is reported by INFO and HELLO.
	Version string
	// Members, when set, reports the cluster's member count for INFO.
	Members func() int
	// MaxClients bounds the connections served at once; one more gets
	// "-ERR max number of clients reached" and is closed. 0: no bound.
	MaxClients int
	// Logger receives connection-level problems, never one line per lookup.
	// nil discards them.
	Logger *slog.Logger
}

// Server is a running RESP listener. Its methods are safe for concurrent use.
type Server struct {
	router      *router.Router
	dbs         map[int]string
	requirePass string
	passDigest  [32]byte // SHA-256 of requirePass
	idle        time.Duration
	version     string
	members     func() int
	maxClients  int
	log         *slog.Logger

	ln       net.Listener
	addr     string
	unixPath string
	started  time.Time

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup

	eventLoop bool         // serve with the event loop instead of a goroutine per connection
	loops     []*eventLoop // the event loops Serve started; under mu
	// testReadLimit, when positive, makes the event loop read at most this
	// many bytes at once from the connections it accepts: tests use it to
	// cut input into pieces.
	testReadLimit atomic.Int64

	serving   atomic.Bool
	nextID    atomic.Uint64
	accepted  atomic.Uint64
	clock     atomic.Int64 // coarse time (UnixNano) for idle tracking
	counters  [lookupShards]counterShard
	closes    [numCloseReasons]atomic.Uint64 // connections closed for a limit, by closeReason
	panics    logThrottle                    // panics recovered; at most one line per panicLogEvery
	authFails logThrottle                    // AUTH (and HELLO AUTH) with a wrong password; tests shorten its every before Serve
}

// Listen validates cfg and binds its address. A unix socket file left behind
// by a process that is gone is removed first; one that something still
// listens on is an error, as is any other file at that path.
func Listen(cfg Config) (*Server, error) {
	if cfg.Router == nil {
		return nil, errors.New("redis listener: no router")
	}
	s := &Server{
		router:      cfg.Router,
		dbs:         map[int]string{0: cfg.Router.DefaultService()},
		requirePass: cfg.RequirePass,
		passDigest:  sha256.Sum256([]byte(cfg.RequirePass)),
		idle:        cfg.IdleTimeout,
		version:     cfg.Version,
		members:     cfg.Members,
		maxClients:  cfg.MaxClients,
		log:         cfg.Logger,
		conns:       map[*conn]struct{}{},
		done:        make(chan struct{}),
		started:     time.Now(),
		eventLoop:   useEventLoop,
	}
	s.panics.every = panicLogEvery
	s.authFails.every = authLogEvery
	for db, service := range cfg.DBs {
		if db < 0 {
			return nil, fmt.Errorf("redis db %d: db numbers start at 0", db)
		}
		if service == "" {
			return nil, fmt.Errorf("redis db %d: empty service name", db)
		}
		s.dbs[db] = service
	}
	if cfg.MaxClients < 0 {
		return nil, fmt.Errorf("redis listener: max clients %d is negative (0 means no bound)", cfg.MaxClients)
	}
	if s.idle == 0 {
		s.idle = DefaultIdleTimeout
	}
	if s.version == "" {
		s.version = "dev"
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.idle > 0 && s.idle <= nginxKeepaliveTimeout {
		s.log.Warn("redis idle timeout is not longer than nginx's default keepalive_timeout: nginx may reuse connections ringman has already closed",
			"idle_timeout", s.idle, "nginx_keepalive_timeout", nginxKeepaliveTimeout)
	}
	s.clock.Store(time.Now().UnixNano())
	var err error
	if s.ln, s.addr, s.unixPath, err = listen(cfg.Addr, cfg.SocketMode); err != nil {
		return nil, err
	}
	return s, nil
}

// Addr is the address the server listens on: "127.0.0.1:54321" or "unix:/path".
func (s *Server) Addr() string { return s.addr }

// useEventLoop picks the engine of the servers Listen makes: the event loop
// where there is one (Linux), else a goroutine per connection. The tests
// switch it to run against both.
var useEventLoop = eventLoopSupported

// Serve accepts connections until Close, then returns nil. On Linux an event
// loop serves them all (see Engines in the package doc); elsewhere each
// connection gets its own goroutine.
func (s *Server) Serve() error {
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("redis listener: Serve called twice")
	}
	if s.eventLoop {
		return s.serveEventLoops()
	}
	return s.serveGoroutines()
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Close stops accepting, closes every connection, waits for their goroutines
// (or event loops) and removes the unix socket file. It is safe to call more
// than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	err := s.ln.Close()
	for c := range s.conns {
		if c.nc != nil { // the event loops close their own
			c.nc.Close()
		}
	}
	loops := s.loops
	for _, l := range loops {
		l.wake()
	}
	s.mu.Unlock()
	s.wg.Wait()
	for _, l := range loops {
		l.closeWake() // only after the loops ended: wake never writes to a reused fd number
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("close redis listener on %s: %w", s.addr, err)
	}
	return nil
}

// --- policies both engines apply ---

// replyMaxClients is Redis's answer to a connection beyond maxclients.
var replyMaxClients = []byte("-ERR max number of clients reached\r\n")

// admitLocked counts a newly accepted connection and registers it, unless
// Config.MaxClients connections are being served already: then it reports
// false, counts the refusal and leaves Redis's error in c.out, for the
// engine to close c gracefully. Such a connection is not in s.conns, so it
// counts for no limit. Both engines call it, under s.mu.
func (s *Server) admitLocked(c *conn) bool {
	s.accepted.Add(1)
	if s.maxClients > 0 && len(s.conns) >= s.maxClients {
		s.limitClosed(c, closeMaxClients)
		c.out = append(c.out, replyMaxClients...)
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// idleTick is how often idle connections are looked for.
func idleTick(idle time.Duration) time.Duration {
	return min(max(idle/10, 5*time.Millisecond), time.Second)
}

// idleCutoff is the activity stamp before which a connection is idle at
// now; without an idle timeout, none is. Activity is stamped with a clock
// that lags by up to a tick (the goroutine engine's coarse clock, the event
// loop's time of the turn): allowing for it, a connection goes between one
// and two ticks after the timeout, never before it.
func (s *Server) idleCutoff(now int64) int64 {
	if s.idle <= 0 {
		return math.MinInt64
	}
	return now - int64(s.idle) - int64(idleTick(s.idle))
}

// idleExpired reports whether c was last active before cutoff; such a
// connection is logged and counted as closed for the idle timeout, and the
// caller closes it.
func (s *Server) idleExpired(c *conn, cutoff int64) bool {
	if c.active.Load() >= cutoff {
		return false
	}
	s.log.Debug("closing idle redis connection", "remote", c.remoteAddr(), "idle_timeout", s.idle)
	s.limitClosed(c, closeIdle)
	return true
}

// acceptFailed logs an accept that failed for a reason that can pass (out
// of file descriptors and the like) and returns how long to wait before
// accepting again, given the previous wait (0 after a success): doubling
// from 5 ms up to a second, so that the listener neither spins nor gives up.
func (s *Server) acceptFailed(err error, wait time.Duration) time.Duration {
	wait = min(max(2*wait, 5*time.Millisecond), time.Second)
	s.log.Warn("redis listener: accept failed, retrying", "addr", s.addr, "err", err, "retry_in", wait)
	return wait
}

// panicLogEvery is the least time between two log lines about recovered
// panics: a misbehaving client could trigger the same bug in a loop.
const panicLogEvery = time.Second

// recovered logs a panic from a command or a connection, at most one line
// per panicLogEvery; each carries the count of panics so far.
func (s *Server) recovered(p any, where string) {
	_, total, ok := s.panics.add(1)
	if !ok {
		return
	}
	s.log.Error("redis: recovered from a panic", "in", where, "panic", fmt.Sprint(p),
		"panics_total", total, "stack", string(debug.Stack()))
}

// authLogEvery is the least time between two log lines about failed AUTH:
// someone guessing passwords must not be able to flood the log.
const authLogEvery = 10 * time.Second

// authFailed counts a refused password from c and logs it, at most one line
// per authLogEvery; each line carries the failures since the previous one
// and the address of the client whose failure it was logged on.
func (s *Server) authFailed(c *conn) {
	since, total, ok := s.authFails.add(1)
	if !ok {
		return
	}
	s.log.Warn("redis: AUTH failed: wrong password", "remote", c.remoteAddr(),
		"failures", since, "failures_total", total, "log_every", s.authFails.every)
}
