package redisapi

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// listen binds addr: "host:port" over TCP, or "unix:/path" as a unix socket
// with the file mode given (0: DefaultSocketMode). It returns the listener,
// the address as Addr reports it and, for a unix socket, its path.
func listen(addr string, mode os.FileMode) (ln net.Listener, bound, unixPath string, err error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if mode == 0 {
			mode = DefaultSocketMode
		}
		if ln, err = listenUnix(path, mode); err != nil {
			return nil, "", "", err
		}
		return ln, "unix:" + path, path, nil
	}
	if addr == "" {
		return nil, "", "", errors.New("redis listener: empty address")
	}
	if ln, err = net.Listen("tcp", addr); err != nil {
		return nil, "", "", fmt.Errorf("redis listener on %s: %w", addr, err)
	}
	return ln, ln.Addr().String(), "", nil
}

func listenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if path == "" {
		return nil, errors.New(`redis listener: "unix:" needs a socket path`)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("redis listener on unix:%s: the file exists and is not a socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("redis listener on unix:%s: another process is listening on it", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("redis listener on unix:%s: check the existing socket: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("redis listener on unix:%s: remove stale socket: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("redis listener on unix:%s: %w", path, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("redis listener on unix:%s: set mode %v: %w", path, mode, err)
	}
	return ln, nil
}
