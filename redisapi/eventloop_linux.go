//go:build linux

package redisapi

// The event loop engine: Redis's design on Go. A goroutine locked to an OS
// thread owns an epoll instance, the listener and every connection it
// accepted, and nothing else touches them. Each turn it waits for all its
// file descriptors at once, then does one read per ready connection and,
// once all are read, one write per connection with replies:
//
//	epoll_wait → read, then parse and exec (conn.serve, as in the goroutine engine) for each → write each
//
// Go's netpoller, by contrast, makes every request cost a read that fails
// with EAGAIN, a park, an epoll_wait on some thread and a wake-up.
//
// # Level-triggered
//
// Readiness is level-triggered, as in Redis. Edge-triggered epoll reports a
// socket once per arrival, so each connection would have to read until
// EAGAIN (the very syscall this engine exists to avoid) or remember that it
// may have more. Level-triggered, one read per ready connection per turn is
// enough, and a connection that sends more than fits is simply reported
// again next turn, after the others had theirs: fairness for free. The
// interest set changes only under back-pressure and when closing, so
// epoll_ctl stays off the lookup path.
//
// # Back-pressure and bounded memory
//
// Input is bounded as in the goroutine engine (conn.makeRoom, the parser's
// limits). Output is written at the end of each turn, or as soon as 64 KiB
// are pending; when the socket does not take it all, the connection stops
// being read (interest EPOLLOUT instead of EPOLLIN) with its unparsed input
// kept, and it resumes parsing where it stopped once the replies are out. A client that
// does not read therefore costs at most one input buffer and about 64 KiB of
// replies, and its socket buffers fill up until its own writes block.
//
// # File descriptors
//
// Each loop has its own duplicate of the listener's fd (so the loop owns it,
// and Go's listener can be closed at any time) and accepts with accept4 into
// non-blocking sockets that Go's runtime never sees. Connection fds are
// closed only by their loop, so an fd number is never reused under a loop
// that still thinks it is the old connection. Events of one turn that belong
// to a connection closed earlier in that turn find no connection and are
// dropped; new connections are accepted only after the turn's events are
// handled, so none of those events can reach them.
//
// # Close, idle connections, errors
//
// Close wakes each loop through an eventfd; the loop closes its connections
// and its fds and ends, and Close waits for it. The loop sweeps for idle
// connections itself (epoll_wait's timeout is the next sweep), as it does
// for half-closed connections past their drain time; a connection is
// active when it is read from, or when replies it had stopped taking move
// on, so one that neither sends nor reads is closed. A protocol error or
// QUIT writes the replies so far, half-closes and drains what the client
// still sends (as conn.closeGracefully does, without blocking); a panic in a
// command is answered by conn.exec, and one anywhere else in the handling of
// a connection closes that connection only.

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

const eventLoopSupported = true

// eventLoops is how many event loops serve a Server. Like Redis, one: on
// the 2-core machine of `make bench` two loops reached 0.76× of
// redis-server unpipelined and 1.11× at -P 16, against 0.99× and 1.37× for
// one (medians of 5 interleaved runs), because the second loop competes
// for the core that the clients on the same machine need. The tests run
// several to keep that path working.
var eventLoops = 1

const (
	maxEvents = 256 // events taken per epoll_wait
	// maxAccepts bounds the connections accepted per turn, so that a burst
	// of them does not hold up the connections already there.
	maxAccepts = 64
	never      = math.MaxInt64
)

// connMode is where a connection of the event loop is in its life.
type connMode uint8

const (
	modeServe    connMode = iota // reading and answering requests (EPOLLIN)
	modeBlocked                  // the client is not taking its replies: writing only (EPOLLOUT)
	modeClosing                  // writing the last replies before the half-close (EPOLLOUT)
	modeDraining                 // half-closed: discarding what the client still sends (EPOLLIN)
	modeClosed
)

// loopConn is a connection served by an event loop.
type loopConn struct {
	conn
	fd       int
	mode     connMode
	interest uint32 // the epoll events asked for
	sent     int    // out[:sent] has been written
	drained  int    // modeDraining: bytes discarded so far
	deadline int64  // modeDraining: closed at this time (UnixNano)
	// readLimit, when positive, caps each read (Server.testReadLimit).
	readLimit int
	queued    bool // on eventLoop.unflushed
}

// eventLoop is one loop: an epoll instance and the connections it accepted.
// Only its own goroutine touches it, except wake and closeWake.
type eventLoop struct {
	s         *Server
	epfd      int
	wakefd    int  // eventfd that Close writes to
	lfd       int  // this loop's duplicate of the listener's fd; -1 once it stopped accepting
	exclusive bool // several loops share the listener: EPOLLEXCLUSIVE
	tcp       bool
	fatal     chan<- error

	conns    []*loopConn // by fd
	nconns   int
	draining int
	events   []unix.EpollEvent
	// unflushed are the connections with replies to write at the end of
	// the turn.
	unflushed []*loopConn

	now           int64         // time.Now().UnixNano() when the current turn began
	tick          time.Duration // idle sweep period; 0 without an idle timeout
	nextSweep     int64         // when to look for idle and drained connections; never if nothing to look for
	acceptResume  int64         // when accepting resumes after a failure; 0 while accepting
	acceptBackoff time.Duration
}

// serveEventLoops is Serve for the event loop engine.
func (s *Server) serveEventLoops() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	n := max(eventLoops, 1)
	fatal := make(chan error, n)
	for range n {
		l, err := newEventLoop(s, n > 1, fatal)
		if err != nil {
			for _, l := range s.loops {
				l.closeFDs()
			}
			s.loops = nil
			s.mu.Unlock()
			return err
		}
		s.loops = append(s.loops, l)
	}
	s.wg.Add(n) // under mu, so that it happens before Close's Wait or not at all
	for _, l := range s.loops {
		go l.run()
	}
	s.mu.Unlock()
	select {
	case <-s.done:
		return nil
	case err := <-fatal:
		// The loops keep serving the connections they have until Close,
		// as the goroutine engine's connections outlive a failed Accept.
		return err
	}
}

func newEventLoop(s *Server, exclusive bool, fatal chan<- error) (l *eventLoop, err error) {
	l = &eventLoop{
		s: s, epfd: -1, wakefd: -1, lfd: -1, exclusive: exclusive, tcp: s.unixPath == "", fatal: fatal,
		events: make([]unix.EpollEvent, maxEvents), nextSweep: never,
	}
	defer func() {
		if err != nil {
			l.closeFDs()
			err = fmt.Errorf("redis listener on %s: start event loop: %w", s.addr, err)
		}
	}()
	if s.idle > 0 {
		l.tick = idleTick(s.idle)
	}
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return l, fmt.Errorf("epoll_create1: %w", err)
	}
	if l.wakefd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		return l, fmt.Errorf("eventfd: %w", err)
	}
	if err = l.ctl(unix.EPOLL_CTL_ADD, l.wakefd, unix.EPOLLIN); err != nil {
		return l, fmt.Errorf("epoll_ctl: %w", err)
	}
	if l.lfd, err = dupListener(s.ln); err != nil {
		return l, err
	}
	if err = l.listen(); err != nil {
		return l, fmt.Errorf("epoll_ctl: %w", err)
	}
	return l, nil
}

func (l *eventLoop) listen() error {
	var events uint32 = unix.EPOLLIN
	if l.exclusive {
		events |= unix.EPOLLEXCLUSIVE // wake one loop per connection, not all
	}
	return l.ctl(unix.EPOLL_CTL_ADD, l.lfd, events)
}

func (l *eventLoop) ctl(op, fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	return unix.EpollCtl(l.epfd, op, fd, &ev)
}

// wake tells the loop to look at Server.done. Close calls it under s.mu.
func (l *eventLoop) wake() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	writeFD(l.wakefd, one[:])
}

// closeWake closes the eventfd once the loop has ended.
func (l *eventLoop) closeWake() {
	if l.wakefd >= 0 {
		unix.Close(l.wakefd)
		l.wakefd = -1
	}
}

// closeFDs closes a loop that never ran.
func (l *eventLoop) closeFDs() {
	l.shutdown()
	l.closeWake()
}

func (l *eventLoop) run() {
	defer l.s.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer l.shutdown()
	defer func() {
		// Connection handling recovers by itself (handle); this is for the
		// loop's own bookkeeping. Serve reports it, and the loop's
		// connections are closed.
		if p := recover(); p != nil {
			l.s.recovered(p, "event loop")
			l.fail(fmt.Errorf("redis listener on %s: event loop: panic: %v", l.s.addr, p))
		}
	}()
	l.now = time.Now().UnixNano()
	for {
		n, err := unix.EpollWait(l.epfd, l.events, l.timeout())
		l.now = time.Now().UnixNano()
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			l.fail(fmt.Errorf("redis listener on %s: epoll_wait: %w", l.s.addr, err))
			return
		}
		accept := false
		for i := range n {
			switch fd := int(l.events[i].Fd); fd {
			case l.wakefd:
				if l.woken() {
					return
				}
			case l.lfd:
				accept = true
			default:
				if fd < len(l.conns) && l.conns[fd] != nil {
					l.handle(l.conns[fd])
				}
			}
		}
		l.flushAll()
		if accept {
			l.accept()
		}
		if l.acceptResume != 0 && l.now >= l.acceptResume {
			l.resumeAccepting()
		}
		if l.now >= l.nextSweep {
			l.sweep()
		}
	}
}

// fail reports an error for Serve to return. Serve returns the first one;
// the others are dropped.
func (l *eventLoop) fail(err error) {
	select {
	case l.fatal <- err:
	default:
	}
}

// timeout is epoll_wait's timeout in milliseconds: until the next sweep or
// the end of an accept back-off, or -1 (none).
func (l *eventLoop) timeout() int {
	next := l.nextSweep
	if l.acceptResume != 0 {
		next = min(next, l.acceptResume)
	}
	if next == never {
		return -1
	}
	return int(max(next-l.now+int64(time.Millisecond)-1, 0) / int64(time.Millisecond))
}

// woken handles the eventfd: it reports whether the server is closing.
func (l *eventLoop) woken() bool {
	var b [8]byte
	readFD(l.wakefd, b[:])
	select {
	case <-l.s.done:
		return true
	default:
		return false
	}
}

// shutdown closes everything the loop owns except the eventfd (closeWake).
func (l *eventLoop) shutdown() {
	for _, lc := range l.conns {
		if lc != nil {
			l.close(lc)
		}
	}
	l.stopAccepting()
	if l.epfd >= 0 {
		unix.Close(l.epfd)
		l.epfd = -1
	}
}

// --- accepting ---

func (l *eventLoop) accept() {
	for range maxAccepts {
		if l.lfd < 0 {
			return
		}
		fd, _, err := unix.Accept4(l.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err == nil {
			l.acceptBackoff = 0
			l.add(fd)
			continue
		}
		switch {
		case err == unix.EAGAIN:
			return
		case retryAccept(err):
			continue
		case err == unix.EMFILE || err == unix.ENFILE || err == unix.ENOBUFS || err == unix.ENOMEM:
			// Stop watching the listener for the back-off.
			l.acceptBackoff = l.s.acceptFailed(err, l.acceptBackoff)
			if l.ctl(unix.EPOLL_CTL_DEL, l.lfd, 0) == nil {
				l.acceptResume = l.now + int64(l.acceptBackoff)
			}
			return
		default:
			l.stopAccepting()
			l.fail(fmt.Errorf("redis listener on %s: %w", l.s.addr, err))
			return
		}
	}
}

// retryAccept is true for errors of one connection that accept reports:
// Linux passes pending network errors of the new socket on (accept(2)).
func retryAccept(err error) bool {
	switch err {
	case unix.EINTR, unix.ECONNABORTED, unix.ECONNRESET, unix.ETIMEDOUT, unix.EPROTO, unix.ENETDOWN, unix.ENOPROTOOPT, unix.EHOSTDOWN,
		unix.ENONET, unix.EHOSTUNREACH, unix.EOPNOTSUPP, unix.ENETUNREACH, unix.EPERM:
		return true
	}
	return false
}

func (l *eventLoop) resumeAccepting() {
	l.acceptResume = 0
	if l.lfd >= 0 && l.listen() != nil {
		l.acceptResume = l.now + int64(l.acceptBackoff)
	}
}

func (l *eventLoop) stopAccepting() {
	if l.lfd >= 0 {
		unix.Close(l.lfd) // also leaves the epoll set
		l.lfd = -1
	}
	l.acceptResume = 0
}

// add starts serving a freshly accepted connection.
func (l *eventLoop) add(fd int) {
	if l.tcp {
		setTCPOptions(fd)
	}
	if err := l.ctl(unix.EPOLL_CTL_ADD, fd, unix.EPOLLIN); err != nil {
		l.s.log.Warn("redis listener: cannot watch a new connection", "addr", l.s.addr, "err", err)
		unix.Close(fd)
		return
	}
	lc := &loopConn{fd: fd, interest: unix.EPOLLIN, readLimit: int(l.s.testReadLimit.Load())}
	lc.init(l.s, nil, l.now)
	lc.peer = lc.remote
	if fd >= len(l.conns) {
		grown := make([]*loopConn, max(2*len(l.conns), fd+1, 64))
		copy(grown, l.conns)
		l.conns = grown
	}
	l.conns[fd] = lc
	l.nconns++
	if l.tick > 0 && l.nextSweep == never {
		l.nextSweep = l.now + int64(l.tick)
	}
	l.s.mu.Lock()
	admitted := l.s.admitLocked(&lc.conn)
	l.s.mu.Unlock()
	if !admitted {
		// The graceful close of a protocol error, bounded by the drain time.
		l.closeGracefully(lc)
	}
}

// --- serving a connection ---

// handle serves one ready connection. A panic here (outside a command,
// which conn.exec answers itself) closes this connection only.
func (l *eventLoop) handle(lc *loopConn) {
	defer l.closeOnPanic(lc)
	switch lc.mode {
	case modeServe:
		l.readRequests(lc)
	case modeBlocked:
		if l.writeOut(lc) {
			lc.active.Store(l.now)
			lc.mode = modeServe
			l.process(lc)
			if lc.mode == modeServe {
				l.want(lc, unix.EPOLLIN)
			}
		}
	case modeClosing:
		if l.writeOut(lc) {
			l.halfClose(lc)
		}
	case modeDraining:
		l.drain(lc)
	}
}

// closeOnPanic, deferred, recovers from a panic in the handling of lc
// and closes lc, so that the loop and its other connections go on.
func (l *eventLoop) closeOnPanic(lc *loopConn) {
	if p := recover(); p != nil {
		l.s.recovered(p, "connection")
		l.close(lc)
	}
}

// readRequests reads once and answers every complete request read so far.
// There is room to read into: the connection's last serve said readMore.
func (l *eventLoop) readRequests(lc *loopConn) {
	p := lc.buf[lc.end:]
	if lc.readLimit > 0 && len(p) > lc.readLimit {
		p = p[:lc.readLimit]
	}
	n, errno := readFD(lc.fd, p)
	switch {
	case errno == unix.EAGAIN || errno == unix.EINTR:
		return
	case errno != 0:
		l.s.log.Debug("redis connection read failed", "remote", lc.remote(), "err", error(errno))
		l.close(lc)
		return
	case n == 0: // the client closed
		l.close(lc)
		return
	}
	lc.received(n, l.now)
	l.process(lc)
}

// process answers the complete requests in the input buffer, in order
// (conn.serve), and queues the replies for the end of the turn. A write the
// socket does not take stops it (modeBlocked) instead of blocking; it goes
// on once the replies are out.
func (l *eventLoop) process(lc *loopConn) {
	for {
		switch lc.serve() {
		case flushFirst:
			if !l.flush(lc) {
				return
			}
		case closeAfterReplies:
			l.closeGracefully(lc)
			return
		case readMore:
			if len(lc.out) > 0 && !lc.queued {
				lc.queued = true
				l.unflushed = append(l.unflushed, lc)
			}
			return
		}
	}
}

// flushAll writes the replies of the turn. Writing them after all the
// reads, as Redis does (handleClientsWithPendingWrites), sends them out in
// one burst, so that a client serving many connections from one thread
// (nginx, redis-benchmark) finds more of them ready each time it wakes.
// Measured against writing each connection's replies at once: 0.96× vs
// 0.90× of redis-server's GETs/s unpipelined, 1.23× vs 1.13× at -P 16
// (medians of 7 interleaved runs on a noisy 2-core machine).
func (l *eventLoop) flushAll() {
	for _, lc := range l.unflushed {
		l.flushQueued(lc)
	}
	clear(l.unflushed)
	l.unflushed = l.unflushed[:0]
}

func (l *eventLoop) flushQueued(lc *loopConn) {
	defer l.closeOnPanic(lc)
	lc.queued = false
	if lc.mode == modeServe {
		l.flush(lc)
	}
}

// flush writes the pending replies and reports whether they are all out.
// When the socket does not take them all, the connection stops reading
// until it does.
func (l *eventLoop) flush(lc *loopConn) bool {
	if l.writeOut(lc) {
		return true
	}
	if lc.mode == modeServe {
		lc.mode = modeBlocked
		l.want(lc, unix.EPOLLOUT)
	}
	return false
}

// writeOut writes what is left of out and reports whether all of it is
// written. A failed write closes the connection.
func (l *eventLoop) writeOut(lc *loopConn) bool {
	for lc.sent < len(lc.out) {
		n, errno := sendFD(lc.fd, lc.out[lc.sent:])
		switch {
		case errno == unix.EINTR:
			continue
		case errno == unix.EAGAIN:
			return false
		case errno != 0:
			l.close(lc)
			return false
		}
		lc.sent += n
		if lc.sent < len(lc.out) {
			return false // the socket buffer is full: the next write would fail
		}
	}
	lc.repliesWritten()
	lc.sent = 0
	return true
}

// want sets the events the loop waits for on the connection.
func (l *eventLoop) want(lc *loopConn, events uint32) {
	if lc.interest == events || lc.mode == modeClosed {
		return
	}
	if err := l.ctl(unix.EPOLL_CTL_MOD, lc.fd, events); err != nil {
		l.close(lc)
		return
	}
	lc.interest = events
}

// closeGracefully is conn.closeGracefully without blocking: write the
// pending replies (an error, or QUIT's +OK), half-close, then read and
// discard what the client still sends, for at most drainBytes and
// drainTime, so that closing does not reset the connection under a reply
// in flight.
func (l *eventLoop) closeGracefully(lc *loopConn) {
	lc.mode = modeClosing
	if l.writeOut(lc) {
		l.halfClose(lc)
		return
	}
	// Wait for the socket to take the rest; the idle sweep bounds the wait.
	l.want(lc, unix.EPOLLOUT)
}

func (l *eventLoop) halfClose(lc *loopConn) {
	if unix.Shutdown(lc.fd, unix.SHUT_WR) != nil {
		l.close(lc)
		return
	}
	lc.mode = modeDraining
	lc.deadline = l.now + int64(drainTime)
	l.draining++
	l.nextSweep = min(l.nextSweep, lc.deadline)
	l.want(lc, unix.EPOLLIN)
}

func (l *eventLoop) drain(lc *loopConn) {
	n, errno := readFD(lc.fd, lc.buf[:cap(lc.buf)])
	switch {
	case errno == unix.EAGAIN || errno == unix.EINTR:
		return
	case errno != 0 || n == 0:
		l.close(lc)
		return
	}
	lc.drained += n
	if lc.drained >= drainBytes {
		l.close(lc)
	}
}

// close closes the connection at once.
func (l *eventLoop) close(lc *loopConn) {
	if lc.mode == modeClosed {
		return
	}
	if lc.mode == modeDraining {
		l.draining--
	}
	lc.mode = modeClosed
	unix.Close(lc.fd) // also leaves the epoll set: the loop holds the only fd
	l.conns[lc.fd] = nil
	lc.fd = -1
	l.nconns--
	l.s.forget(&lc.conn)
}

// sweep closes connections idle for longer than the idle timeout and
// half-closed ones past their drain time, and schedules the next sweep.
func (l *eventLoop) sweep() {
	cutoff := l.s.idleCutoff(l.now)
	next := int64(never)
	for _, lc := range l.conns {
		switch {
		case lc == nil:
		case lc.mode == modeDraining && l.now >= lc.deadline:
			l.close(lc)
		case l.s.idleExpired(&lc.conn, cutoff):
			l.close(lc)
		case lc.mode == modeDraining:
			next = min(next, lc.deadline)
		}
	}
	if l.tick > 0 && l.nconns > 0 {
		next = min(next, l.now+int64(l.tick))
	}
	l.nextSweep = next
}

// remote is the client's address, for log lines.
func (lc *loopConn) remote() string { return peerName(lc.fd) }
