package redisapi

// The goroutine engine: each connection gets a goroutine that reads,
// answers (conn.serve) and writes in turn on Go's netpoller, and one more
// goroutine sweeps for idle connections. It serves where there is no event
// loop (eventloop_other.go), and on Linux too when the tests switch to it
// (useEventLoop).

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// serveGoroutines is Serve for the goroutine engine: it accepts each
// connection and gives it a goroutine (serveConn).
func (s *Server) serveGoroutines() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	if s.idle > 0 {
		s.wg.Add(1) // under mu, so that it happens before Close's Wait or not at all
		go s.closeIdle()
	}
	s.mu.Unlock()
	var backoff time.Duration
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return nil
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = s.acceptFailed(err, backoff)
				select {
				case <-time.After(backoff):
				case <-s.done:
					return nil
				}
				continue
			}
			return fmt.Errorf("redis listener on %s: %w", s.addr, err)
		}
		backoff = 0
		s.accept(nc)
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) accept(nc net.Conn) {
	c := newConn(s, nc)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		nc.Close()
		return
	}
	admitted := s.admitLocked(c)
	s.wg.Add(1)
	s.mu.Unlock()
	if !admitted {
		go s.refuse(c)
		return
	}
	go s.serveConn(c)
}

// refuse closes a connection admitLocked refused: gracefully, so that the
// error is not lost to a reset when the client has already sent a request,
// and within a bounded time, as Close waits for this goroutine.
func (s *Server) refuse(c *conn) {
	defer s.wg.Done()
	defer c.nc.Close()
	c.nc.SetWriteDeadline(time.Now().Add(drainTime))
	c.closeGracefully()
}

// serveConn is the goroutine engine (see Server.Serve): it reads requests,
// answers them in order and writes the answers of everything that arrived
// together in one write (pipelining) before it reads again. It returns when
// the client goes away, sends something it cannot accept, sends QUIT, idles
// too long, or the server closes.
func (s *Server) serveConn(c *conn) {
	defer s.wg.Done()
	defer s.forget(c)
	defer c.nc.Close()
	defer func() {
		if p := recover(); p != nil {
			s.recovered(p, "connection")
		}
	}()
	for {
		switch c.serve() {
		case flushFirst:
			if c.flush() != nil {
				return
			}
			continue
		case closeAfterReplies:
			c.closeGracefully()
			return
		}
		if c.flush() != nil {
			return
		}
		n, err := c.nc.Read(c.buf[c.end:])
		c.received(n, s.clock.Load())
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("redis connection read failed", "remote", c.remoteAddr(), "err", err)
			}
			return
		}
	}
}

// flush writes the pending replies.
func (c *conn) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	_, err := c.nc.Write(c.out)
	c.repliesWritten()
	return err
}

// closeGracefully writes the pending replies (an error, or QUIT's +OK) and
// makes sure the client can read them: closing a socket with unread input
// makes the kernel send a reset, which can destroy the reply in flight. So
// it half-closes, and reads and discards (boundedly) what the client is still
// sending before the caller closes the connection.
func (c *conn) closeGracefully() {
	if c.flush() != nil {
		return
	}
	cw, ok := c.nc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	c.nc.SetReadDeadline(time.Now().Add(drainTime))
	buf := c.buf[:cap(c.buf)]
	for total := 0; total < drainBytes; {
		n, err := c.nc.Read(buf)
		total += n
		if err != nil {
			return
		}
	}
}

// closeIdle keeps the coarse clock and closes connections that have been
// quiet for longer than the idle timeout. One sweep per tick replaces a read
// deadline per request on the lookup path, and it also catches connections
// stuck writing to a client that stopped reading.
func (s *Server) closeIdle() {
	defer s.wg.Done()
	t := time.NewTicker(idleTick(s.idle))
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			s.clock.Store(now.UnixNano())
			cutoff := s.idleCutoff(now.UnixNano())
			s.mu.Lock()
			for c := range s.conns {
				if s.idleExpired(c, cutoff) {
					c.nc.Close()
				}
			}
			s.mu.Unlock()
		}
	}
}
