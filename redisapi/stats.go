package redisapi

import (
	"sync/atomic"

	"ringman/router"
)

// lookupShards spreads the lookup counters over cache lines so that
// connections on different cores do not contend on one atomic word.
const lookupShards = 64

// counterShard is one shard of the lookup counters; each connection counts
// into the shard of its id. It fills two cache lines (adjacent-line
// prefetch pulls lines in pairs).
type counterShard struct {
	lookups [router.NumSources]atomic.Uint64 // keys looked up, by router.Source
	errors  atomic.Uint64                    // lookup commands answered with an error
	_       [128 - 4*8]byte
}

// closeReason is why the server closed a connection because of a limit.
type closeReason uint8

const (
	closeRequestTooBig closeReason = iota
	closeTooManyArgs
	closeProtocolError
	closeIdle
	closeMaxClients
	numCloseReasons
)

// closeReasonOf maps a protocol error to the limit it broke.
func closeReasonOf(err error) closeReason {
	switch err {
	case errTooBig, errInlineTooBig:
		return closeRequestTooBig
	case errTooManyArgs:
		return closeTooManyArgs
	}
	return closeProtocolError
}

// Lookups is the number of keys looked up (GET, MGET keys, RING.LOOKUP) so far.
func (s *Server) Lookups() uint64 {
	var n uint64
	for i := range s.counters {
		for j := range s.counters[i].lookups {
			n += s.counters[i].lookups[j].Load()
		}
	}
	return n
}

// Stats is a snapshot of a Server's counters, for metrics.
type Stats struct {
	// Lookups counts the keys looked up (GET, each key of MGET,
	// RING.LOOKUP) by where the answer came from, indexed by router.Source.
	Lookups [router.NumSources]uint64
	// LookupErrors counts lookup commands (GET, MGET, RING.LOOKUP)
	// answered with an error: wrong arity, NOAUTH, bad arguments.
	LookupErrors uint64
	// Clients is the number of connections being served now.
	Clients int
	// Accepted counts the connections accepted, refused ones included.
	Accepted uint64
	// Closed counts the connections the server closed because of a limit.
	Closed LimitCloses
	// AuthFailures counts AUTH and HELLO AUTH refused with WRONGPASS.
	AuthFailures uint64
}

// LimitCloses counts connections closed because of a limit, by limit.
type LimitCloses struct {
	RequestTooBig uint64 // a request over MaxRequestBytes
	TooManyArgs   uint64 // a request over MaxArgs arguments
	ProtocolError uint64 // malformed input
	IdleTimeout   uint64 // nothing received for Config.IdleTimeout
	MaxClients    uint64 // refused: Config.MaxClients connections were being served
}

// Stats sums the server's counters. It is meant for a metrics scrape: it
// takes the connection lock once and reads every counter shard.
func (s *Server) Stats() Stats {
	var st Stats
	for i := range s.counters {
		sh := &s.counters[i]
		for src := range sh.lookups {
			st.Lookups[src] += sh.lookups[src].Load()
		}
		st.LookupErrors += sh.errors.Load()
	}
	st.Clients = s.connectedClients()
	st.Accepted = s.accepted.Load()
	st.AuthFailures = s.authFails.total()
	st.Closed = LimitCloses{
		RequestTooBig: s.closes[closeRequestTooBig].Load(),
		TooManyArgs:   s.closes[closeTooManyArgs].Load(),
		ProtocolError: s.closes[closeProtocolError].Load(),
		IdleTimeout:   s.closes[closeIdle].Load(),
		MaxClients:    s.closes[closeMaxClients].Load(),
	}
	return st
}

// limitClosed counts c as closed because of a limit, once whatever the
// paths that close it (the idle sweep can race with a protocol error).
func (s *Server) limitClosed(c *conn, why closeReason) {
	if c.limited.CompareAndSwap(false, true) {
		s.closes[why].Add(1)
	}
}

func (s *Server) connectedClients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
