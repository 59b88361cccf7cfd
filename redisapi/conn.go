package redisapi

import (
	"net"
	"sync/atomic"
	"time"
)

// Sizes of per-connection buffers.
const (
	initialReadBuffer = 4 << 10
	flushThreshold    = 64 << 10  // write replies out once this many are pending
	maxKeptOutput     = 256 << 10 // larger output buffers are dropped after use
)

// conn is one client connection: its buffers, parser and session state.
// Both engines use it. Under the goroutine engine only the connection's own
// goroutine touches it, except active (read by the idle sweep) and nc.Close
// (called by Close and the sweep); under the event loop only its loop does.
type conn struct {
	s  *Server
	nc net.Conn
	id uint64

	buf        []byte // input; buf[start:end] is not parsed yet
	start, end int
	p          parser
	out        []byte // replies not written yet

	db      int
	service string // the selected db's service
	authed  bool
	name    string // CLIENT SETNAME
	quit    bool   // QUIT: close after writing the replies so far

	// peer returns the client's address when nc is nil (the event loop's
	// connections).
	peer func() string

	counters *counterShard // this connection's shard of Server.counters
	active   atomic.Int64  // coarse time of the last read
	limited  atomic.Bool   // counted as closed for a limit (Server.limitClosed)
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{}
	c.init(s, nc, s.clock.Load())
	return c
}

// init prepares a new connection; now stamps its activity. nc is nil for
// the event loop's connections, which are bare file descriptors.
func (c *conn) init(s *Server, nc net.Conn, now int64) {
	id := s.nextID.Add(1)
	c.s, c.nc, c.id = s, nc, id
	c.buf = make([]byte, initialReadBuffer)
	c.service = s.dbs[0]
	c.authed = s.requirePass == ""
	c.counters = &s.counters[id%lookupShards]
	c.active.Store(now)
}

// remoteAddr is the client's address, for log lines.
func (c *conn) remoteAddr() string {
	switch {
	case c.nc != nil:
		return c.nc.RemoteAddr().String()
	case c.peer != nil:
		return c.peer()
	}
	return ""
}

// nextStep is what conn.serve leaves its engine to do.
type nextStep uint8

const (
	// readMore: every complete request is answered and buf has room at
	// its end. Write the replies out, then read.
	readMore nextStep = iota
	// flushFirst: flushThreshold bytes of replies are pending. Write them
	// out, then call serve again for the requests still in buf.
	flushFirst
	// closeAfterReplies: a protocol error (its reply is in out) or QUIT.
	// Write the replies out, then close the connection gracefully.
	closeAfterReplies
)

// serve is the step both engines take whenever input arrived or replies
// moved on: it parses each complete request in buf[start:end], runs it,
// appends its reply to out and moves start past it. It stops at the first
// incomplete request, when the replies reach flushThreshold, on QUIT, or on
// a request it cannot accept (counted as a limit close). Before it reports
// readMore it makes room in buf for the next read (makeRoom), which also
// gives back the memory of a large request once it is done. How replies are
// written, and what waits for the socket, is the engine's business.
func (c *conn) serve() nextStep {
	for c.start < c.end {
		n, args, err := c.p.parse(c.buf[c.start:c.end])
		if err != nil {
			c.out = appendError(c.out, err.Error())
			c.s.log.Debug("redis protocol error", "remote", c.remoteAddr(), "err", err)
			c.s.limitClosed(c, closeReasonOf(err))
			return closeAfterReplies
		}
		if n == 0 {
			break // incomplete: read more
		}
		c.start += n
		if len(args) > 0 {
			c.exec(args)
			if c.quit {
				return closeAfterReplies
			}
		}
		if len(c.out) >= flushThreshold {
			return flushFirst
		}
	}
	if !c.makeRoom() {
		// Cannot happen: the parser refuses a request before it outgrows
		// the largest buffer. Refuse it here too, to be safe.
		c.out = appendError(c.out, errTooBig.Error())
		c.s.limitClosed(c, closeRequestTooBig)
		return closeAfterReplies
	}
	return readMore
}

// received records n bytes read into buf at the end; now stamps the
// connection's activity for the idle sweep.
func (c *conn) received(n int, now int64) {
	c.end += n
	c.active.Store(now)
}

// makeRoom makes free space at the end of buf for the next read, keeping
// buf within MaxRequestBytes. It reports false when buf is full of one
// request that already has the largest size allowed.
func (c *conn) makeRoom() bool {
	if c.start == c.end {
		c.start, c.end = 0, 0
		if len(c.buf) > initialReadBuffer {
			// A large request is done: give its memory back.
			c.buf = make([]byte, initialReadBuffer)
		}
		return true
	}
	free := len(c.buf) - c.end
	if free >= len(c.buf)/4 {
		return true
	}
	if c.start > 0 {
		// Move the incomplete request to the front.
		c.end = copy(c.buf, c.buf[c.start:c.end])
		c.start = 0
		if len(c.buf)-c.end >= len(c.buf)/4 {
			return true
		}
	}
	if len(c.buf) >= MaxRequestBytes {
		return c.end < len(c.buf)
	}
	grown := make([]byte, min(2*len(c.buf), MaxRequestBytes))
	c.end = copy(grown, c.buf[:c.end])
	c.buf = grown
	return true
}

// repliesWritten empties out once its replies are written, keeping its memory
// unless a large burst of replies grew it.
func (c *conn) repliesWritten() {
	if cap(c.out) > maxKeptOutput {
		c.out = nil
	} else {
		c.out = c.out[:0]
	}
}

// Bounds on reading what a client still sends after we decided to close.
const (
	drainBytes = 256 << 10
	drainTime  = 250 * time.Millisecond
)
