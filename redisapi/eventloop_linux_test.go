package redisapi

import (
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Tests of the event loop itself; the rest of the suite runs against it too.

func skipUnlessEventLoop(t *testing.T) {
	t.Helper()
	if !useEventLoop {
		t.Skip("event loop tests run in the event loop pass of the suite")
	}
}

// A GET through the event loop, from the request's bytes on the socket to
// the reply's, allocates nothing: counted for the whole process, over real
// round trips (the test's client side allocates nothing either).
func TestEventLoopGETDoesNotAllocate(t *testing.T) {
	skipUnlessEventLoop(t)
	if raceEnabled {
		t.Skip("the race detector's instrumentation allocates")
	}
	s := startServer(t, Config{})
	for _, pipeline := range []int{1, 16} {
		c := dial(t, s.Addr())
		req := []byte(strings.Repeat(request("GET", "example.com/some/path"), pipeline))
		want := strings.Repeat(bulk(owner(t, s.router, "web", "example.com/some/path")), pipeline)
		exchange(t, c, string(req), want) // accepted, buffers allocated
		got := make([]byte, len(want))
		const rounds = 2000
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range rounds {
			if _, err := c.Write(req); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
		}
		runtime.ReadMemStats(&after)
		if string(got) != want {
			t.Fatalf("P=%d: got %q, want %q", pipeline, got, want)
		}
		// A few allocations of the runtime or the test framework may land
		// in the window; one per 100 round trips would be the server's.
		if n := after.Mallocs - before.Mallocs; n > rounds/100 {
			t.Errorf("P=%d: %d allocations in %d round trips", pipeline, n, rounds)
		} else {
			t.Logf("P=%d: %d allocations in %d round trips", pipeline, n, rounds)
		}
	}
}

// Several loops share the listener: every connection is served by one of
// them, and Close stops them all.
func TestEventLoopsShareListener(t *testing.T) {
	skipUnlessEventLoop(t)
	defer func(n int) { eventLoops = n }(eventLoops)
	eventLoops = 3
	s := startServer(t, Config{})
	want := bulk(owner(t, s.router, "web", "k"))
	var wg sync.WaitGroup
	for range 30 {
		c := dial(t, s.Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				c.Write([]byte(request("GET", "k")))
				if got, err := readN(c, len(want), 5*time.Second); string(got) != want {
					t.Errorf("GET k: %q, %v; want %q", got, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := s.connectedClients(); n != 30 {
		t.Errorf("connected clients = %d, want 30", n)
	}
	if got := s.Lookups(); got != 30*50 {
		t.Errorf("Lookups() = %d, want %d", got, 30*50)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := s.connectedClients(); n != 0 {
		t.Errorf("%d connections left after Close", n)
	}
}

// Out of file descriptors, accepting fails: the server logs it, backs off,
// and serves the waiting client once descriptors are free again. (Both
// engines; the limit is the test process's own.)
func TestAcceptBackoffWhenOutOfFDs(t *testing.T) {
	s := startServer(t, Config{})
	exchange(t, dial(t, s.Addr()), request("PING"), "+PONG\r\n") // serving
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	open := uint64(len(fds) - 1) // less the directory ReadDir had open
	// Room for the client's socket, none for the server's side of it.
	low := old
	low.Cur = open + 1
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skip("cannot lower RLIMIT_NOFILE:", err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer restore()
	c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		restore()
		t.Fatalf("dial with %d of %d fds open: %v", open, low.Cur, err)
	}
	defer c.Close()
	waitFor(t, 5*time.Second, func() (bool, string) {
		return strings.Contains(s.logs.String(), "accept failed, retrying"), "no accept failure logged; logs:\n" + s.logs.String()
	})
	restore()
	exchange(t, c, request("PING"), "+PONG\r\n")
}
