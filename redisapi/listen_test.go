package redisapi

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestListenErrors(t *testing.T) {
	r := newTestRouter(t)
	dir := t.TempDir()
	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no router", Config{Addr: "127.0.0.1:0"}, "no router"},
		{"empty address", Config{Router: r}, "empty address"},
		{"address taken", Config{Router: r, Addr: taken.Addr().String()}, "address already in use"},
		{"bad address", Config{Router: r, Addr: "nonsense"}, "redis listener on nonsense"},
		{"unix without path", Config{Router: r, Addr: "unix:"}, "needs a socket path"},
		{"unix over a regular file", Config{Router: r, Addr: "unix:" + regular}, "not a socket"},
		{"unix in a missing dir", Config{Router: r, Addr: "unix:" + filepath.Join(dir, "no", "s.sock")}, "no such file"},
		{"negative db", Config{Router: r, Addr: "127.0.0.1:0", DBs: map[int]string{-1: "web"}}, "db -1"},
		{"empty service", Config{Router: r, Addr: "127.0.0.1:0", DBs: map[int]string{2: ""}}, "empty service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Listen(tt.cfg)
			if err == nil {
				s.Close()
				t.Fatalf("Listen succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
	if b, err := os.ReadFile(regular); err != nil || string(b) != "keep me" {
		t.Errorf("the regular file at the socket path was touched: %q, %v", b, err)
	}
}

func TestUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ringman.sock")
	addr := "unix:" + path

	// A stale socket file (its process is gone) is replaced.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("setting up a stale socket: %v", err)
	}

	s, err := Listen(Config{Addr: addr, Router: newTestRouter(t)})
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	if s.Addr() != addr {
		t.Errorf("Addr() = %q, want %q", s.Addr(), addr)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != DefaultSocketMode {
		t.Errorf("socket mode %v, want %v", fi.Mode().Perm(), DefaultSocketMode)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()

	// A live socket is not taken over.
	if s2, err := Listen(Config{Addr: addr, Router: newTestRouter(t)}); err == nil {
		s2.Close()
		t.Fatal("a second Listen on a live socket succeeded")
	} else if !strings.Contains(err.Error(), "another process is listening") {
		t.Errorf("second Listen: %v", err)
	}
	c := dial(t, addr)
	exchange(t, c, request("PING"), "+PONG\r\n")

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve after Close = %v, want nil", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket file still there after Close: %v", err)
	}
	// Close closed the client connection too.
	if got := readUntilClosed(t, c, 5*time.Second); len(got) != 0 {
		t.Errorf("read %q after Close", got)
	}

	// A mode of our own.
	s3, err := Listen(Config{Addr: addr, Router: newTestRouter(t), SocketMode: 0o600})
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
}

func TestServeAndClose(t *testing.T) {
	// Close before Serve: Serve returns nil at once.
	s, err := Listen(Config{Addr: "127.0.0.1:0", Router: newTestRouter(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Errorf("Serve after Close = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}

	// Serve twice is an error; Close ends the first one.
	ts := startServer(t, Config{})
	c := dial(t, ts.Addr())
	exchange(t, c, request("PING"), "+PONG\r\n")
	waitFor(t, 5*time.Second, func() (bool, string) {
		return ts.serving.Load(), "Serve has not started"
	})
	if err := ts.Serve(); err == nil {
		t.Error("a second Serve succeeded")
	}
	// Many connections, then Close: every goroutine ends (Close waits).
	for i := 0; i < 20; i++ {
		exchange(t, dial(t, ts.Addr()), request("PING"), "+PONG\r\n")
	}
	if err := ts.Close(); err != nil {
		t.Fatal(err)
	}
	if n := ts.connectedClients(); n != 0 {
		t.Errorf("%d connections left after Close", n)
	}
	if _, err := net.Dial("tcp", ts.Addr()); err == nil {
		t.Error("still accepting after Close")
	}
}
