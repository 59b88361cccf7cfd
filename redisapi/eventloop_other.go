//go:build !linux

package redisapi

import "errors"

// Without epoll there is no event loop: every connection gets its own
// goroutine (serveConn).
const eventLoopSupported = false

type eventLoop struct{}

func (s *Server) serveEventLoops() error {
	return errors.New("redis listener: the event loop engine needs Linux")
}

func (l *eventLoop) wake()      {}
func (l *eventLoop) closeWake() {}
