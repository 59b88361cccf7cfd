package redisapi

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Oversized requests get one error line and a closed connection; other
// clients are not affected.
func TestOversizeRequests(t *testing.T) {
	s := startServer(t, Config{})
	bystander := dial(t, s.Addr())
	want := bulk(owner(t, s.router, "web", "k"))
	exchange(t, bystander, request("GET", "k"), want)

	big := strings.Repeat("x", 70<<10)
	tests := []struct {
		name, in, reply string
	}{
		{"70 KiB inline line", "GET " + big + "\r\n", "-ERR Protocol error: too big inline request\r\n"},
		{"70 KiB bulk", request("GET", big), "-ERR Protocol error: request larger than 65536 bytes\r\n"},
		{"2,000 arguments", request(append([]string{"MGET"}, make([]string, 1999)...)...),
			"-ERR Protocol error: more than 1024 arguments in request\r\n"},
		{"2,000 inline arguments", "MGET" + strings.Repeat(" k", 1999) + "\r\n",
			"-ERR Protocol error: more than 1024 arguments in request\r\n"},
		{"bulk length 2^31", "*2\r\n$3\r\nGET\r\n$2147483648\r\n",
			"-ERR Protocol error: request larger than 65536 bytes\r\n"},
		{"many args adding up past 64 KiB", request(append([]string{"MGET"}, strings.Split(strings.Repeat(strings.Repeat("y", 100)+",", 700), ",")...)...),
			"-ERR Protocol error: request larger than 65536 bytes\r\n"},
		{"answers before the bad request are kept", request("PING") + "*1\r\n$-5\r\n",
			"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, s.Addr())
			go c.Write([]byte(tt.in)) // may fail part-way: the server hangs up
			if got := readUntilClosed(t, c, 5*time.Second); string(got) != tt.reply {
				t.Errorf("got %q, want %q", got, tt.reply)
			}
			exchange(t, bystander, request("GET", "k"), want)
		})
	}
}

// Garbage gets an error and a closed connection, or (for text that parses
// as inline commands) unknown-command errors; never a crash or a hang.
func TestGarbage(t *testing.T) {
	s := startServer(t, Config{})
	for _, tt := range []struct{ in, want string }{
		// A NUL ends an inline line for Redis too: nothing to run.
		{"\x00\x01\x02\xff\xfe\r\n", ""},
		{"*\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
		{"*1\r\n$1\r\nab\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		{"*3\r\n$3\r\nGET\r\n:1\r\n", "-ERR Protocol error: expected '$', got ':'\r\n"},
		{"\"unterminated\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"},
		{"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", "-ERR wrong number of arguments for 'get' command\r\n" +
			"-ERR unknown command 'Host:', with args beginning with: 'a' \r\n"},
		// A TLS ClientHello has no line end: it waits for more, then the
		// client's end of input closes it.
		{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", ""},
	} {
		c := dial(t, s.Addr())
		c.Write([]byte(tt.in))
		c.(*net.TCPConn).CloseWrite()
		if got := readUntilClosed(t, c, 5*time.Second); string(got) != tt.want {
			t.Errorf("%q: got %q, want %q", tt.in, got, tt.want)
		}
	}
	if n := s.panics.total(); n != 0 {
		t.Errorf("%d panics recovered", n)
	}
}

// A request near the limit, arriving in small pieces, is answered.
func TestLargeRequestInPieces(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s.Addr())
	key := strings.Repeat("k", 60<<10)
	req := []byte(request("GET", key) + "GET " + key + "\r\n")
	for len(req) > 0 {
		n := min(len(req), 1000)
		if _, err := c.Write(req[:n]); err != nil {
			t.Fatal(err)
		}
		req = req[n:]
	}
	want := bulk(owner(t, s.router, "web", key))
	if got, err := readN(c, 2*len(want), 5*time.Second); string(got) != want+want {
		t.Fatalf("got %.100q, %v; want %q twice", got, err, want)
	}
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// Streaming 100 MB with no line end at the server, from several clients at
// once, costs it no more than a bounded buffer per connection: they get an
// error and are cut off after MaxRequestBytes, and the heap stays within
// 8 MiB of where it was, measured while they stream.
func TestMemoryBoundedWhileStreaming(t *testing.T) {
	const (
		clients  = 8
		perConn  = 100 << 20
		bound    = 8 << 20
		chunkLen = 32 << 10
	)
	s := startServer(t, Config{})
	before := heapInUse()

	var peak uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()

	chunk := bytes.Repeat([]byte("garbage-"), chunkLen/8)
	var wg sync.WaitGroup
	sent := make([]int, clients)
	replies := make([]string, clients)
	for i := range clients {
		c := dial(t, s.Addr())
		wg.Add(2)
		go func() {
			defer wg.Done()
			for sent[i] < perConn {
				n, err := c.Write(chunk)
				sent[i] += n
				if err != nil {
					return // the server hung up, as it should
				}
			}
		}()
		go func() {
			defer wg.Done()
			replies[i] = string(readUntilClosed(t, c, 10*time.Second))
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled

	for i := range clients {
		if replies[i] != "-ERR Protocol error: too big inline request\r\n" {
			t.Errorf("client %d: reply %q", i, replies[i])
		}
		if sent[i] >= perConn {
			t.Errorf("client %d: the server read all %d bytes instead of hanging up", i, sent[i])
		}
	}
	if grown := int64(peak) - int64(before); grown > bound {
		t.Errorf("heap grew by %d bytes while %d clients streamed garbage (bound %d)", grown, clients, bound)
	} else {
		t.Logf("heap in use grew by at most %d KiB while %d clients streamed (bound %d MiB)", max(grown, 0)>>10, clients, bound>>20)
	}
}

// A client that pipelines lookups and never reads the replies blocks the
// server's writes; the server stops reading it instead of buffering replies.
func TestMemoryBoundedWhenClientDoesNotRead(t *testing.T) {
	s := startServer(t, Config{})
	before := heapInUse()
	c := dial(t, s.Addr())
	batch := []byte(strings.Repeat(request("MGET", "a", "b", "c", "d", "e", "f", "g", "h"), 1000))
	sent := 0
	c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	for sent < 200<<20 {
		n, err := c.Write(batch)
		sent += n
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatal(err)
			}
			break // the server stopped reading: the socket buffers are full
		}
	}
	if sent >= 200<<20 {
		t.Fatalf("the server kept reading %d bytes of requests whose replies nobody reads", sent)
	}
	if grown := int64(heapInUse()) - int64(before); grown > 8<<20 {
		t.Errorf("heap grew by %d bytes for one client that does not read (sent %d bytes)", grown, sent)
	}
}

func TestAuthRaw(t *testing.T) {
	s := startServer(t, Config{RequirePass: "s3cret"})
	c := dial(t, s.Addr())
	noauth := "-NOAUTH Authentication required.\r\n"
	exchange(t, c, request("get", "k"), noauth)
	exchange(t, c, request("PING"), noauth)
	exchange(t, c, request("SELECT", "0"), noauth)
	exchange(t, c, request("INFO"), noauth)
	// Unknown commands and bad arity are reported before NOAUTH, as Redis does.
	exchange(t, c, request("nosuch", "x"), "-ERR unknown command 'nosuch', with args beginning with: 'x' \r\n")
	exchange(t, c, request("get"), "-ERR wrong number of arguments for 'get' command\r\n")
	exchange(t, c, request("HELLO", "2"), "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n")
	exchange(t, c, request("AUTH", "wrong"), "-WRONGPASS invalid username-password pair or user is disabled.\r\n")
	exchange(t, c, request("AUTH", "a", "b", "c"), "-ERR syntax error\r\n")
	exchange(t, c, request("get", "k"), noauth)
	exchange(t, c, request("AUTH", "s3cret"), "+OK\r\n")
	exchange(t, c, request("get", "k"), bulk(owner(t, s.router, "web", "k")))

	// HELLO can authenticate.
	c2 := dial(t, s.Addr())
	exchange(t, c2, request("HELLO", "2", "AUTH", "default", "bad"), "-WRONGPASS invalid username-password pair or user is disabled.\r\n")
	c2.Write([]byte(request("HELLO", "2", "AUTH", "default", "s3cret", "SETNAME", "n1")))
	if got, err := readN(c2, 3, 5*time.Second); string(got) != "*14" {
		t.Fatalf("HELLO 2 AUTH: %q, %v", got, err)
	}
	c3 := dial(t, s.Addr())
	exchange(t, c3, "QUIT\r\n", "+OK\r\n")
	if got := readUntilClosed(t, c3, 5*time.Second); len(got) != 0 {
		t.Errorf("after QUIT: %q", got)
	}
}

func TestIdleTimeout(t *testing.T) {
	// The busy client's pace is a hundredth of the timeout, so that it is
	// not closed when the machine is too loaded to run the test for a
	// second or so.
	const idle, pace = 2 * time.Second, 20 * time.Millisecond
	s := startServer(t, Config{IdleTimeout: idle})
	busy := dial(t, s.Addr())
	quiet := dial(t, s.Addr())
	start := time.Now() // before the quiet one's last request
	exchange(t, quiet, request("PING"), "+PONG\r\n")

	// The quiet one is closed, without a reply, not before the timeout...
	var closedAfter time.Duration
	closed := make(chan []byte, 1)
	go func() {
		got := readUntilClosed(t, quiet, idle+10*time.Second)
		closedAfter = time.Since(start)
		closed <- got
	}()
	// ...while the busy client talks more often and is left alone.
	tick := time.NewTicker(pace) // pacing the client, not waiting for a condition
	defer tick.Stop()
	pings := 0
	var got []byte
	for done := false; !done; {
		exchange(t, busy, request("PING"), "+PONG\r\n")
		pings++
		select {
		case got = <-closed:
			done = true
		case <-tick.C:
		}
	}
	exchange(t, busy, request("PING"), "+PONG\r\n")
	t.Logf("the quiet client was closed %v after its PING; the busy one sent %d meanwhile", closedAfter.Round(time.Millisecond), pings)
	if len(got) != 0 {
		t.Errorf("idle close sent %q", got)
	}
	if closedAfter < idle {
		t.Errorf("closed after %v, before the idle timeout %v", closedAfter, idle)
	}
	waitFor(t, 5*time.Second, func() (bool, string) {
		n := s.connectedClients()
		return n == 1, "connected clients: " + itoa(n) + ", want 1"
	})
}

func TestNoIdleTimeout(t *testing.T) {
	s := startServer(t, Config{IdleTimeout: -1})
	if s.idle >= 0 {
		t.Fatalf("negative IdleTimeout became %v", s.idle)
	}
	s2 := startServer(t, Config{})
	if s2.idle != DefaultIdleTimeout {
		t.Fatalf("zero IdleTimeout became %v, want %v", s2.idle, DefaultIdleTimeout)
	}
}

func TestHandlerPanic(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s.Addr())
	// The test router's hasher panics on panicKey; MGET has written part of
	// its reply by then, which must be dropped.
	exchange(t, c, request("MGET", "a", panicKey)+request("GET", panicKey)+request("GET", "k"),
		"-ERR internal error\r\n-ERR internal error\r\n"+bulk(owner(t, s.router, "web", "k")))
	if n := s.panics.total(); n != 2 {
		t.Errorf("panics = %d, want 2", n)
	}
	logs := s.logs.String()
	if strings.Count(logs, "recovered from a panic") != 1 || !strings.Contains(logs, "test hasher asked to panic") {
		t.Errorf("want one log line for two panics within a second, got:\n%s", logs)
	}
}

// Nothing is logged per lookup.
func TestNoLogPerLookup(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s.Addr())
	for i := 0; i < 100; i++ {
		exchange(t, c, request("GET", "k"), bulk(owner(t, s.router, "web", "k")))
	}
	if logs := s.logs.String(); logs != "" {
		t.Errorf("lookups logged:\n%s", logs)
	}
}

// A client that pipelines more requests than the server can answer before
// the client reads is stopped (the server stops reading), and once it reads,
// it gets every reply, in order, and the rest of its requests are served.
func TestBackpressureResumes(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s.Addr())
	req := request("MGET", "a", "b", "c", "d", "e", "f", "g", "h")
	reply := "*8\r\n"
	for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		reply += bulk(owner(t, s.router, "web", k))
	}
	batch := []byte(strings.Repeat(req, 1000))

	// Write without reading until the server stops taking requests.
	sent := 0
	c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	for {
		n, err := c.Write(batch)
		sent += n
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatal(err)
			}
			break
		}
		if sent >= 200<<20 {
			t.Fatalf("the server kept reading %d bytes of requests whose replies nobody reads", sent)
		}
	}
	c.SetWriteDeadline(time.Time{})

	// Complete the request cut by the deadline, send one more batch, and
	// read every reply.
	rest := (len(req) - sent%len(req)) % len(req)
	total := (sent+rest)/len(req) + 1000
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(append(batch[sent%len(batch):sent%len(batch)+rest:sent%len(batch)+rest], batch...))
		wrote <- err
	}()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	rd := bufio.NewReaderSize(c, 64<<10)
	got := make([]byte, len(reply))
	for i := range total {
		if _, err := io.ReadFull(rd, got); err != nil || string(got) != reply {
			t.Fatalf("reply %d of %d: %q, %v; want %q", i+1, total, got, err, reply)
		}
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d requests (%d KiB) pipelined before the server stopped reading", sent/len(req), sent>>10)
	exchange(t, c, request("GET", "k"), bulk(owner(t, s.router, "web", "k")))
}
