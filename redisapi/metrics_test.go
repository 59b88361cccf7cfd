package redisapi

import (
	"bytes"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ringman/hostmap"
	"ringman/router"
)

// BenchmarkExecGET measures the lookup path inside the server, from request
// bytes to reply bytes, without syscalls: parse, exec (lookup and counting),
// reply. It is where counting costs show; BenchmarkGET buries them under
// the syscalls. Parallel runs one connection per goroutine, as the server
// does, so connections on different cores count into different shards.
// Run it on one engine (the engine does not matter here):
//
//	go test -run '^$' -bench ExecGET -benchtime 2000000x -count 5 -engine goroutine ./redisapi/
func BenchmarkExecGET(b *testing.B) {
	for _, bc := range []struct {
		name string
		req  string
	}{
		{"ring", request("GET", "example.com/some/path")},
		{"miss", request("SELECT", "1") + request("GET", "/x")}, // thumbs, emptied below
		{"mget3", request("MGET", "a", "b", "c")},
	} {
		for _, parallel := range []bool{false, true} {
			name := bc.name
			if parallel {
				name += "/parallel"
			}
			b.Run(name, func(b *testing.B) {
				s := newFuzzServer(b)
				if bc.name == "miss" {
					if _, err := s.router.Update(map[string][]string{"web": testInstances["web"]}); err != nil {
						b.Fatal(err)
					}
				}
				in := []byte(bc.req)
				serve := func(c *conn, buf []byte) {
					copy(buf, in)
					for p := buf; len(p) > 0; {
						n, args, err := c.p.parse(p)
						if err != nil || n == 0 {
							b.Fatalf("parse: %d, %v", n, err)
						}
						c.exec(args)
						p = p[n:]
					}
					c.out = c.out[:0]
				}
				b.ReportAllocs()
				if !parallel {
					c := newConn(s, &memConn{})
					c.out = make([]byte, 0, 4096)
					buf := make([]byte, len(in))
					b.ResetTimer()
					for range b.N {
						serve(c, buf)
					}
					return
				}
				b.RunParallel(func(pb *testing.PB) {
					c := newConn(s, &memConn{})
					c.out = make([]byte, 0, 4096)
					buf := make([]byte, len(in))
					for pb.Next() {
						serve(c, buf)
					}
				})
			})
		}
	}
}

// overrideRouter is the test router with a real override table (hostmap on
// a bbolt file in a temporary dir) pinning pinned.example.com.
func overrideRouter(t *testing.T) *router.Router {
	t.Helper()
	r := newTestRouter(t)
	db, err := bolt.Open(filepath.Join(t.TempDir(), "overrides.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	table, err := hostmap.Open(db, hostmap.Options{Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { table.Close() })
	if _, err := table.Set("pinned.example.com", "10.9.9.9:1"); err != nil {
		t.Fatal(err)
	}
	r.SetOverrides(table)
	return r
}

// Stats counts every key looked up by where its answer came from, and
// every lookup command answered with an error, whatever the command and
// the connection; other commands and their errors count for nothing.
func TestStatsCountLookups(t *testing.T) {
	s := startServer(t, Config{Router: overrideRouter(t), DBs: map[int]string{2: "empty"}})
	c := dial(t, s.Addr())
	ringAnswer := bulk(owner(t, s.router, "web", "/a"))
	pinned := bulk("10.9.9.9:1")
	exchange(t, c, request("GET", "pinned.example.com/x"), pinned)                       // override
	exchange(t, c, request("GET", "/a"), ringAnswer)                                     // ring
	exchange(t, c, "get PINNED.example.com:8080/y\r\n", pinned)                          // override, inline
	exchange(t, c, request("RING.LOOKUP", "pinned.example.com/z", "3"), "*1\r\n"+pinned) // override
	exchange(t, c, request("RING.LOOKUP", "/a", "1"), "*1\r\n"+ringAnswer)               // ring
	exchange(t, c, request("RING.LOOKUP", "/a", "1", "empty"), "*0\r\n")                 // miss
	exchange(t, c, request("MGET", "/a", "pinned.example.com/", "/a"), "*3\r\n"+ringAnswer+pinned+ringAnswer)
	exchange(t, c, request("SELECT", "2"), "+OK\r\n")
	exchange(t, c, request("GET", "/a"), "$-1\r\n")                     // miss
	exchange(t, c, request("MGET", "/a", "/b"), "*2\r\n$-1\r\n$-1\r\n") // 2 misses
	exchange(t, c, request("GET", "pinned.example.com/a"), pinned)      // an override wins on an empty ring too
	// Lookup errors: each a lookup command answered with an error.
	for _, req := range []string{
		request("GET"),
		request("GET", "a", "b"),
		request("MGET"),
		request("RING.LOOKUP"),
		request("RING.LOOKUP", "/a", "many"),
		request("RING.LOOKUP", "/a", "0"),
		request("RING.LOOKUP", "/a", "1", "web", "extra"),
		request("RING.LOOKUP", "/a", "9"),
		request("RING.LOOKUP", "/a", "1", "nosuchservice"),
	} {
		exchange(t, c, req, "-")
		readUntilLineEnd(t, c)
	}
	// Not lookups: no count.
	exchange(t, c, request("PING"), "+PONG\r\n")
	for _, req := range []string{request("SELECT", "99"), request("NOSUCH"), request("RING.MEMBERS", "a", "b")} {
		exchange(t, c, req, "-")
		readUntilLineEnd(t, c)
	}

	// A password: lookups before AUTH are errors (NOAUTH).
	locked := startServer(t, Config{RequirePass: "secret"})
	lc := dial(t, locked.Addr())
	exchange(t, lc, request("GET", "/a"), "-NOAUTH Authentication required.\r\n")
	exchange(t, lc, request("MGET", "/a", "/b"), "-NOAUTH Authentication required.\r\n")
	exchange(t, lc, request("AUTH", "secret"), "+OK\r\n")
	exchange(t, lc, request("GET", "/a"), bulk(owner(t, locked.router, "web", "/a")))

	st := s.Stats()
	want := [3]uint64{router.Miss: 4, router.Ring: 4, router.Override: 5}
	if st.Lookups != want || st.LookupErrors != 9 {
		t.Errorf("Stats: lookups %v (miss, ring, override), errors %d; want %v and 9", st.Lookups, st.LookupErrors, want)
	}
	if got := s.Lookups(); got != 13 {
		t.Errorf("Lookups() = %d, want 13 (INFO's lookups_served)", got)
	}
	if st := locked.Stats(); st.Lookups != [3]uint64{router.Ring: 1} || st.LookupErrors != 2 {
		t.Errorf("with a password: lookups %v, errors %d; want [0 1 0] and 2 (the NOAUTHs)", st.Lookups, st.LookupErrors)
	}
}

// readUntilLineEnd reads the rest of a one-line reply.
func readUntilLineEnd(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var b []byte
	one := make([]byte, 1)
	for !bytes.HasSuffix(b, []byte("\r\n")) {
		if _, err := c.Read(one); err != nil {
			t.Fatalf("reading a reply line: got %q, %v", b, err)
		}
		b = append(b, one[0])
	}
	return string(b)
}

// A connection beyond MaxClients gets Redis's error and is closed, whether
// it sends first or not; the clients being served are not affected, a
// client's place is free again once it leaves, and the refusals are counted.
func TestMaxClients(t *testing.T) {
	s := startServer(t, Config{MaxClients: 2})
	a, b := dial(t, s.Addr()), dial(t, s.Addr())
	exchange(t, a, request("PING"), "+PONG\r\n")
	exchange(t, b, request("PING"), "+PONG\r\n")

	const refused = "-ERR max number of clients reached\r\n"
	silent := dial(t, s.Addr())
	if got := readUntilClosed(t, silent, 5*time.Second); string(got) != refused {
		t.Errorf("third client, sending nothing: got %q, want %q and the connection closed", got, refused)
	}
	talker := dial(t, s.Addr())
	if _, err := talker.Write([]byte(request("GET", "/a"))); err != nil {
		t.Fatal(err)
	}
	if got := readUntilClosed(t, talker, 5*time.Second); string(got) != refused {
		t.Errorf("fourth client, sending a GET at once: got %q, want %q and the connection closed", got, refused)
	}
	exchange(t, a, request("GET", "/a"), bulk(owner(t, s.router, "web", "/a")))

	st := s.Stats()
	if st.Closed.MaxClients != 2 || st.Accepted != 4 || st.Clients != 2 {
		t.Errorf("Stats: refused %d, accepted %d, clients %d; want 2, 4 (refused ones included) and 2", st.Closed.MaxClients, st.Accepted, st.Clients)
	}
	info := infoOf(t, a)
	for _, line := range []string{"connected_clients:2\r\n", "maxclients:2\r\n", "rejected_connections:2\r\n", "total_connections_received:4\r\n"} {
		if !strings.Contains(info, line) {
			t.Errorf("INFO lacks %q:\n%s", line, info)
		}
	}

	b.Close()
	waitFor(t, 5*time.Second, func() (bool, string) {
		n := s.Stats().Clients
		return n == 1, fmt.Sprintf("%d clients after one of 2 left, want 1", n)
	})
	c := dial(t, s.Addr())
	exchange(t, c, request("PING"), "+PONG\r\n")
	if st := s.Stats(); st.Closed.MaxClients != 2 || st.Clients != 2 {
		t.Errorf("after a client left and another came: refused %d, clients %d; want 2 and 2", st.Closed.MaxClients, st.Clients)
	}
}

func infoOf(t *testing.T, c net.Conn) string {
	t.Helper()
	if _, err := c.Write([]byte(request("INFO"))); err != nil {
		t.Fatal(err)
	}
	header := readUntilLineEnd(t, c) // $<len>
	n, err := strconv.Atoi(strings.TrimSpace(header[1:]))
	if err != nil || header[0] != '$' {
		t.Fatalf("INFO reply starts %q", header)
	}
	body, err := readN(c, n+2, 5*time.Second)
	if err != nil {
		t.Fatalf("INFO body: %q, %v", body, err)
	}
	return string(body)
}

// Each limit that closes a connection is counted under its own reason,
// once per connection.
func TestStatsCountLimitCloses(t *testing.T) {
	s := startServer(t, Config{})
	big := strings.Repeat("x", 70<<10)
	for _, in := range []string{
		"GET " + big + "\r\n", // request too big (inline)
		request("GET", big),   // request too big (bulk)
		"*2000\r\n",           // too many arguments
		"MGET" + strings.Repeat(" k", 1999) + "\r\n", // too many arguments (inline)
		"*1\r\n+PING\r\n", // protocol error
		"*1\r\n$-5\r\n",   // protocol error
	} {
		c := dial(t, s.Addr())
		go c.Write([]byte(in)) // may fail part-way: the server hangs up
		if got := readUntilClosed(t, c, 5*time.Second); !strings.HasPrefix(string(got), "-ERR Protocol error: ") {
			t.Fatalf("%.40q: got %q, want a protocol error", in, got)
		}
	}
	want := LimitCloses{RequestTooBig: 2, TooManyArgs: 2, ProtocolError: 2}
	if got := s.Stats().Closed; got != want {
		t.Errorf("closes %+v, want %+v", got, want)
	}

	// It sends nothing: a request after the dial could come after the
	// 50 ms already, on a loaded machine.
	idle := startServer(t, Config{IdleTimeout: 50 * time.Millisecond})
	quiet := dial(t, idle.Addr())
	if got := readUntilClosed(t, quiet, 5*time.Second); len(got) != 0 {
		t.Errorf("idle connection got %q before it was closed", got)
	}
	waitFor(t, 5*time.Second, func() (bool, string) {
		st := idle.Stats()
		return st.Clients == 0, fmt.Sprintf("%d clients after the idle one was closed", st.Clients)
	})
	if got := idle.Stats().Closed; got != (LimitCloses{IdleTimeout: 1}) {
		t.Errorf("closes %+v, want one for the idle timeout only", got)
	}
}

// Counting allocates nothing on the lookup path, errors included.
func TestCountingDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's instrumentation allocates")
	}
	s := newFuzzServer(t)
	c := newConn(s, &memConn{})
	c.out = make([]byte, 0, 4096)
	for _, req := range []string{request("GET", "/a"), request("MGET", "/a", "/b"), request("GET"), request("RING.LOOKUP", "/a", "x")} {
		assertNoAllocs(t, c, req)
	}
	if st := s.Stats(); st.Lookups[router.Ring] < 3000 || st.LookupErrors < 2000 {
		t.Errorf("counted %v lookups and %d errors, want at least 3000 ring lookups and 2000 errors", st.Lookups, st.LookupErrors)
	}
}
