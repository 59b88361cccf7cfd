package redisapi

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
)

// The lookup path, from request bytes to reply bytes, allocates nothing.
func TestLookupPathDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's instrumentation allocates")
	}
	s := newFuzzServer(t)
	c := newConn(s, &memConn{})
	for _, tc := range []struct{ name, req string }{
		{"GET", request("GET", "/some/key")},
		{"get lowercase", request("get", "example.com/some/key")},
		{"GET inline", "get /some/key\r\n"},
		{"MGET", request("MGET", "a", "b", "c")},
		{"RING.LOOKUP", request("RING.LOOKUP", "k", "3")},
		{"RING.LOOKUP with service", request("ring.lookup", "k", "3", "thumbs")},
		{"GET on an unknown service", request("SELECT", "1") + request("GET", "k")},
		{"SELECT", request("SELECT", "0")},
		{"PING", request("PING")},
	} {
		in := []byte(tc.req)
		buf := make([]byte, len(in))
		c.out = make([]byte, 0, 4096)
		run := func() {
			copy(buf, in) // inline parsing unquotes in place
			for b := buf; len(b) > 0; {
				n, args, err := c.p.parse(b)
				if err != nil || n == 0 {
					t.Fatalf("%s: parse: %d, %v", tc.name, n, err)
				}
				c.exec(args)
				b = b[n:]
			}
			c.out = c.out[:0]
		}
		if allocs := testing.AllocsPerRun(1000, run); allocs != 0 {
			t.Errorf("%s: %v allocations per request", tc.name, allocs)
		}
	}
}

// BenchmarkGET measures GET over real TCP through the whole server:
// parsing, lookup, reply, syscalls. One op is one GET. Allocations are
// counted for the whole process; the client side allocates nothing.
func BenchmarkGET(b *testing.B) {
	for _, bc := range []struct {
		name     string
		conns    int
		pipeline int
	}{
		{"conns=1/P=1", 1, 1},
		{"conns=1/P=16", 1, 16},
		{"conns=50/P=1", 50, 1},
		{"conns=50/P=16", 50, 16},
	} {
		b.Run(engineName(useEventLoop)+"/"+bc.name, func(b *testing.B) {
			s := startServer(b, Config{})
			key := "example.com/some/path"
			req := []byte(strings.Repeat(request("GET", key), bc.pipeline))
			reply := []byte(strings.Repeat(bulk(owner(b, s.router, "web", key)), bc.pipeline))
			conns := make(chan net.Conn, bc.conns)
			for range bc.conns {
				conns <- dial(b, s.Addr())
			}
			b.SetParallelism((bc.conns + 1) / 2) // GOMAXPROCS is 2 here; any surplus just waits
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				c := <-conns
				defer func() { conns <- c }()
				got := make([]byte, len(reply))
				for pb.Next() {
					// pb.Next counts one op; a batch of P GETs counts P.
					for i := 1; i < bc.pipeline && pb.Next(); i++ {
					}
					if _, err := c.Write(req); err != nil {
						b.Error(err)
						return
					}
					if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, reply) {
						b.Errorf("reply %q, %v", got, err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "GETs/s")
		})
	}
}
