package redisapi

import (
	"context"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RING.LOOKUP takes 1 to MaxCandidates candidates and refuses any other
// count with an error that names the range, as HTTP and the CLI do; it
// never clamps.
func TestRingLookupCountRule(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s.Addr())
	refused := func(n string) string {
		return "-ERR count must be a whole number from 1 to 8, got '" + n + "'\r\n"
	}
	for _, n := range []string{"0", "9", "100", "-1", "x", "", "1.5", "+3", "99999999999999999999"} {
		exchange(t, c, request("RING.LOOKUP", "k", n, "thumbs"), refused(n))
	}
	exchange(t, c, request("RING.LOOKUP", "k", "8", "thumbs"), "*1\r\n"+bulk("10.0.1.1:8080"))
	three, _ := s.router.Candidates("web", []byte("k"), 3)
	exchange(t, c, request("RING.LOOKUP", "k", "03"), "*3\r\n"+bulk(three[0])+bulk(three[1])+bulk(three[2])) // leading zeros are harmless
	if st := s.Stats(); st.LookupErrors != 9 {
		t.Errorf("counted %d lookup errors, want 9 (each refused count)", st.LookupErrors)
	}
}

// A service the router never heard of is an error of its own prefix on
// RING.LOOKUP and RING.MEMBERS; a known service with no live instance
// (mapped by a db, or whose last instance went) is an empty answer; GET
// and MGET on a db whose service has no instance answer nil.
func TestUnknownServiceRESP(t *testing.T) {
	s := startServer(t, Config{DBs: map[int]string{1: "thumbs", 2: "mapped"}})
	c := dial(t, s.Addr())
	exchange(t, c, request("RING.LOOKUP", "k", "1", "nosuch"), "-NOSERVICE unknown service 'nosuch'\r\n")
	exchange(t, c, request("RING.MEMBERS", "nosuch"), "-NOSERVICE unknown service 'nosuch'\r\n")
	exchange(t, c, request("RING.LOOKUP", "k", "2", "mapped"), "*0\r\n")
	exchange(t, c, request("RING.MEMBERS", "mapped"), "*0\r\n")
	exchange(t, c, request("SELECT", "2")+request("GET", "k")+request("MGET", "a")+request("RING.LOOKUP", "k"),
		"+OK\r\n$-1\r\n*1\r\n$-1\r\n*0\r\n")

	// thumbs loses its only instance: no live instance, still known.
	if _, err := s.router.Update(map[string][]string{"web": testInstances["web"]}); err != nil {
		t.Fatal(err)
	}
	exchange(t, c, request("RING.LOOKUP", "k", "1", "thumbs"), "*0\r\n")
	exchange(t, c, request("RING.MEMBERS", "thumbs"), "*0\r\n")

	// A service first advertised after the server started is known, and
	// stays known once it is gone.
	if _, err := s.router.Update(map[string][]string{"web": testInstances["web"], "late": {"10.0.2.1:80"}}); err != nil {
		t.Fatal(err)
	}
	exchange(t, c, request("RING.LOOKUP", "k", "1", "late"), "*1\r\n"+bulk("10.0.2.1:80"))
	if _, err := s.router.Update(map[string][]string{"web": testInstances["web"]}); err != nil {
		t.Fatal(err)
	}
	exchange(t, c, request("RING.LOOKUP", "k", "1", "late"), "*0\r\n")

	// go-redis sees the prefix as the error's first word.
	rc := redis.NewClient(&redis.Options{Addr: s.Addr(), Protocol: 2})
	t.Cleanup(func() { rc.Close() })
	_, err := rc.Do(context.Background(), "RING.LOOKUP", "k", 1, "nosuch").Result()
	if err == nil || !strings.HasPrefix(err.Error(), "NOSERVICE unknown service") {
		t.Errorf("go-redis RING.LOOKUP on an unknown service: %v, want a NOSERVICE error", err)
	}
}

// startAuthServer is startServer with a password and the failed-AUTH log
// interval set to every.
func startAuthServer(t *testing.T, every time.Duration) *testServer {
	t.Helper()
	logs := &testLogger{}
	s, err := Listen(Config{Addr: "127.0.0.1:0", Router: newTestRouter(t), RequirePass: "secret",
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s.authFails.every = every // before Serve: nothing reads it yet
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{Server: s, logs: logs}
}

var authLine = regexp.MustCompile(`msg="redis: AUTH failed: wrong password" remote=(\S+) failures=(\d+) failures_total=(\d+)`)

// authLines returns the failed-AUTH log lines: remote, failures since the
// previous line, total.
func authLines(logs string) [][]string {
	var out [][]string
	for _, m := range authLine.FindAllStringSubmatch(logs, -1) {
		out = append(out, m[1:])
	}
	return out
}

// A refused password is counted every time and logged at most once per
// interval, with the client's address.
func TestAuthFailuresCountedAndLogged(t *testing.T) {
	s := startAuthServer(t, time.Hour)
	c := dial(t, s.Addr())
	const wrong = 20
	for i := range wrong {
		if i%2 == 0 {
			exchange(t, c, request("AUTH", "guess"+strconv.Itoa(i)), "-WRONGPASS invalid username-password pair or user is disabled.\r\n")
		} else {
			exchange(t, c, request("HELLO", "2", "AUTH", "default", "guess"), "-WRONGPASS invalid username-password pair or user is disabled.\r\n")
		}
	}
	exchange(t, c, request("AUTH", "bob", "secret"), "-WRONGPASS invalid username-password pair or user is disabled.\r\n")
	exchange(t, c, request("AUTH", "secret"), "+OK\r\n")                        // not a failure
	exchange(t, c, request("GET", "/a"), bulk(owner(t, s.router, "web", "/a"))) // authed
	if got := s.Stats().AuthFailures; got != wrong+1 {
		t.Errorf("Stats().AuthFailures = %d, want %d", got, wrong+1)
	}
	lines := authLines(s.logs.String())
	if len(lines) != 1 {
		t.Fatalf("logged %d failed-AUTH lines, want 1 within the interval; log:\n%s", len(lines), s.logs.String())
	}
	if lines[0][0] != c.LocalAddr().String() || lines[0][1] != "1" || lines[0][2] != "1" {
		t.Errorf("line %q, want remote %s, failures 1, total 1", lines[0], c.LocalAddr())
	}
}

// Once the interval has passed, the next failure logs a line with the
// failures since the previous line.
func TestAuthFailuresLogCountsSinceLastLine(t *testing.T) {
	s := startAuthServer(t, 20*time.Millisecond)
	c := dial(t, s.Addr())
	fail := func() {
		exchange(t, c, request("AUTH", "guess"), "-WRONGPASS invalid username-password pair or user is disabled.\r\n")
	}
	for range 5 {
		fail()
	}
	waitFor(t, 10*time.Second, func() (bool, string) {
		if n := len(authLines(s.logs.String())); n < 2 {
			fail()
			return false, strconv.Itoa(n) + " failed-AUTH lines logged"
		}
		return true, ""
	})
	lines := authLines(s.logs.String())
	sum := 0
	for i, l := range lines {
		n, _ := strconv.Atoi(l[1])
		sum += n
		if total, _ := strconv.Atoi(l[2]); total != sum {
			t.Errorf("line %d: %q: total %d, want the sum of the lines so far, %d", i, l, total, sum)
		}
	}
	if got := s.Stats().AuthFailures; uint64(sum) > got || sum < 2 {
		t.Errorf("lines count %d failures, Stats %d", sum, got)
	}
}

// The count rule and the known-service check keep RING.LOOKUP free of
// allocations, refusals included.
func TestRingLookupDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's instrumentation allocates")
	}
	s := newFuzzServer(t)
	c := newConn(s, &memConn{})
	c.out = make([]byte, 0, 4096)
	for _, req := range []string{
		request("RING.LOOKUP", "/a", "3"),
		request("RING.LOOKUP", "/a", "3", "thumbs"),
		request("RING.LOOKUP", "/a", "1", "nosuch"),
		request("RING.LOOKUP", "/a", "9"),
		request("RING.MEMBERS", "nosuch"),
	} {
		assertNoAllocs(t, c, req)
	}
}
