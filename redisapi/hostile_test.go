package redisapi

// Hostile clients over real sockets. Each attack runs against a
// real server, once per engine (TestMain), while a go-redis client keeps
// doing GETs. What must hold: the bystander is answered all along; the
// attacker is cut off, with a "-ERR Protocol error" reply where RESP has
// room for one (an idle or silent client is closed without one, as Redis
// does: RESP2 has no unsolicited replies); and the process's memory stays
// within the bound each test states. The memory figures include the test's
// own clients, which share the process.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// bystander is a well-behaved client that GETs one key in a loop for as long
// as an attack runs.
type bystander struct {
	gets  atomic.Int64
	stop  chan struct{}
	done  chan struct{}
	err   error         // the first failure; read after done
	worst time.Duration // the slowest GET; read after done
}

const bystanderKey = "bystander.example.com/key"

func startBystander(t *testing.T, s *testServer) *bystander {
	t.Helper()
	c := goRedis(t, s.Addr(), redis.Options{Protocol: 2, PoolSize: 1})
	want := owner(t, s.router, "web", bystanderKey)
	b := &bystander{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		ctx := context.Background()
		for {
			select {
			case <-b.stop:
				return
			default:
			}
			start := time.Now()
			got, err := c.Get(ctx, bystanderKey).Result()
			if err == nil && got != want {
				err = fmt.Errorf("GET = %q, want %q", got, want)
			}
			if err != nil {
				b.err = fmt.Errorf("GET %d: %w", b.gets.Load()+1, err)
				return
			}
			b.worst = max(b.worst, time.Since(start))
			b.gets.Add(1)
		}
	}()
	t.Cleanup(func() {
		select {
		case <-b.stop:
		default:
			close(b.stop)
		}
		<-b.done
	})
	// It is connected and answered before the attack starts.
	b.progress(t, 1)
	return b
}

// progress waits until the bystander has made n more GETs, failing if it
// stopped or does not get there within 10 s: the server is answering
// others now, during the attack.
func (b *bystander) progress(t *testing.T, n int64) {
	t.Helper()
	target := b.gets.Load() + n
	waitFor(t, 10*time.Second, func() (bool, string) {
		select {
		case <-b.done:
			return true, ""
		default:
		}
		got := b.gets.Load()
		return got >= target, fmt.Sprintf("the bystander made %d of %d GETs", got, target)
	})
	select {
	case <-b.done:
		t.Fatalf("the bystander stopped: %v", b.err)
	default:
	}
}

// check stops the bystander and fails the test if any GET failed.
func (b *bystander) check(t *testing.T) {
	t.Helper()
	close(b.stop)
	<-b.done
	if b.err != nil {
		t.Fatalf("the bystander failed during the attack: %v", b.err)
	}
	t.Logf("bystander: %d GETs answered during the attack, the slowest in %v", b.gets.Load(), b.worst.Round(time.Microsecond))
}

// memWatch samples the process's live heap (HeapInuse) and resident set
// (VmRSS) from a baseline taken after a collection, and keeps the peaks.
type memWatch struct {
	baseHeap, baseRSS uint64
	peakHeap, peakRSS atomic.Uint64
	stop, done        chan struct{}
}

func watchMemory(t *testing.T) *memWatch {
	// Give freed memory back to the OS first, so that VmRSS starts from
	// what is in use, not from what an earlier test left mapped.
	debug.FreeOSMemory()
	rss, err := vmRSS()
	if err != nil {
		t.Skipf("cannot measure VmRSS: %v", err)
	}
	m := &memWatch{baseHeap: heapInUse(), baseRSS: rss, stop: make(chan struct{}), done: make(chan struct{})}
	m.peakHeap.Store(m.baseHeap)
	m.peakRSS.Store(m.baseRSS)
	go func() {
		defer close(m.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			m.sample()
			select {
			case <-m.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(m.end)
	return m
}

// sample records the current heap in use and VmRSS if they are peaks.
func (m *memWatch) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	storeMax(&m.peakHeap, ms.HeapInuse)
	if rss, err := vmRSS(); err == nil {
		storeMax(&m.peakRSS, rss)
	}
}

func storeMax(a *atomic.Uint64, v uint64) {
	for old := a.Load(); v > old && !a.CompareAndSwap(old, v); old = a.Load() {
	}
}

func (m *memWatch) end() {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	<-m.done
}

// check ends the watch and fails the test when the peak growth of the
// heap or of the resident set is over its bound; it logs both figures.
func (m *memWatch) check(t *testing.T, what string, heapBound, rssBound uint64) {
	t.Helper()
	m.end()
	heap := int64(m.peakHeap.Load()) - int64(m.baseHeap)
	rss := int64(m.peakRSS.Load()) - int64(m.baseRSS)
	t.Logf("%s: peak growth: heap in use %+.1f MiB (bound %d MiB), VmRSS %+.1f MiB (bound %d MiB; race detector: %v)",
		what, float64(heap)/(1<<20), heapBound>>20, float64(rss)/(1<<20), rssBound>>20, raceEnabled)
	if heap > int64(heapBound) {
		t.Errorf("%s: the heap in use grew by %d bytes, over the bound of %d", what, heap, heapBound)
	}
	if rss > int64(rssBound) {
		t.Errorf("%s: VmRSS grew by %d bytes, over the bound of %d", what, rss, rssBound)
	}
}

// vmRSS is the process's resident set in bytes, from /proc/self/status.
func vmRSS() (uint64, error) {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS line in /proc/self/status")
}

// RSS bounds allow for the race detector's shadow memory, which grows with
// everything the process touches.
func rssBound(plain uint64) uint64 {
	if raceEnabled {
		return 4 * plain
	}
	return plain
}

// TestHostileStreams: clients that stream 100 MB each without ever ending
// a request, in every shape the parser has to give up on, all at once. Each
// is answered with a protocol error and cut off after at most
// MaxRequestBytes plus what closing drains (drainBytes), however much more
// it sends; the server's memory does not follow what they send.
func TestHostileStreams(t *testing.T) {
	const (
		perClient = 100 << 20
		chunkLen  = 64 << 10
	)
	const (
		tooBig      = "-ERR Protocol error: request larger than 65536 bytes\r\n"
		inlineBig   = "-ERR Protocol error: too big inline request\r\n"
		badBulkLen  = "-ERR Protocol error: invalid bulk length\r\n"
		bulkPrefix  = "*2\r\n$3\r\nGET\r\n"
		smallBulk64 = "$57\r\n" + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" + "\r\n"
	)
	// Each client sends prefix, then unit over and over.
	tests := []struct{ name, prefix, unit, reply string }{
		{"inline line without a newline", "GET ", "x", inlineBig},
		{"inline quote never closed", "GET \"", "x", inlineBig},
		{"a line of NULs", "", "\x00", inlineBig},
		{"a bulk of 100 MB", bulkPrefix + "$104857600\r\n", "x", tooBig},
		{"bulk length 2^31", bulkPrefix + "$2147483648\r\n", "x", tooBig},
		{"bulk length 2^31-1", bulkPrefix + "$2147483647\r\n", "x", tooBig},
		{"bulk length 2^63-1", bulkPrefix + "$9223372036854775807\r\n", "x", tooBig},
		{"bulk length 2^64", bulkPrefix + "$18446744073709551616\r\n", "x", badBulkLen},
		{"bulk length -2^31", bulkPrefix + "$-2147483648\r\n", "x", badBulkLen},
		{"array of 2^31 arguments", "*2147483648\r\n", "$", "-ERR Protocol error: more than 1024 arguments in request\r\n"},
		{"array header without a newline", "*", "1", "-ERR Protocol error: invalid multibulk length\r\n"},
		{"bulk header without a newline", "*1\r\n$", "1", badBulkLen},
		{"a bulk longer than it said", "*1\r\n$4\r\n", "x", badBulkLen},
		{"1,024 arguments of 64 bytes", "*1024\r\n", smallBulk64, tooBig},
	}
	s := startServer(t, Config{})
	by := startBystander(t, s)
	mem := watchMemory(t)

	var wg sync.WaitGroup
	sent := make([]int, len(tests))
	replies := make([]string, len(tests))
	for i, tt := range tests {
		c := dial(t, s.Addr())
		chunk := bytes.Repeat([]byte(tt.unit), chunkLen/len(tt.unit))
		wg.Add(2)
		go func() {
			defer wg.Done()
			n, err := c.Write([]byte(tt.prefix))
			sent[i] += n
			for err == nil && sent[i] < perClient {
				n, err = c.Write(chunk)
				sent[i] += n
			}
		}()
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			out, err := io.ReadAll(c) // until the server closes (EOF or a reset)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				out = append(out, " (and the connection is still open after 30 s)"...)
			}
			replies[i] = string(out)
		}()
	}
	by.progress(t, 10) // answered while the streams run
	wg.Wait()
	by.check(t)
	mem.check(t, fmt.Sprintf("%d clients streaming up to %d MB each", len(tests), perClient>>20), 8<<20, rssBound(24<<20))

	for i, tt := range tests {
		if replies[i] != tt.reply {
			t.Errorf("%s: reply %q, want %q", tt.name, replies[i], tt.reply)
		}
		// Loopback socket buffers hold a few MB; the server read at most
		// MaxRequestBytes + drainBytes of it.
		if sent[i] >= 16<<20 {
			t.Errorf("%s: the server took %d bytes before hanging up", tt.name, sent[i])
		}
	}
	t.Logf("cut off after %v bytes sent (socket buffers included)", sent)
	if n := s.panics.total(); n != 0 {
		t.Errorf("%d panics recovered", n)
	}
}

// pipelinedGETs is how many GETs TestHostilePipelineUnread pipelines. The
// race detector slows the server about tenfold, so under it the test sends
// a tenth of them: the full million runs without -race
// (go test -run HostilePipeline ./redisapi/).
func pipelinedGETs() int {
	if raceEnabled {
		return 100_000
	}
	return 1_000_000
}

// pipelineBatch is 1,000 GETs of distinct keys of keyLen bytes (at least
// 4), and the replies to them.
func pipelineBatch(t *testing.T, s *testServer, keyLen int) (req, reply []byte) {
	var rq, rp bytes.Buffer
	for i := range 1000 {
		key := fmt.Sprintf("k%0*d", keyLen-1, i)
		rq.WriteString(request("GET", key))
		rp.WriteString(bulk(owner(t, s.router, "web", key)))
	}
	return rq.Bytes(), rp.Bytes()
}

// TestHostilePipelineUnread: a client writes a million GETs (see pipelined)
// without reading a reply. The server stops reading it once its replies back up (it keeps
// about 64 KiB of them), so the client's writes block, memory stays flat,
// and others are served. When the client finally reads, it gets every
// reply, in order.
func TestHostilePipelineUnread(t *testing.T) {
	total := pipelinedGETs()
	s := startServer(t, Config{})
	req, reply := pipelineBatch(t, s, 4)
	by := startBystander(t, s)
	mem := watchMemory(t)
	start := time.Now()

	c := dial(t, s.Addr())
	blocked := make(chan int, 1) // bytes written when a write first stalled
	wrote := make(chan error, 1)
	go func() {
		stalled := false
		for i := 0; i < total/1000; i++ {
			b := req
			for len(b) > 0 {
				if !stalled {
					c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
				}
				n, err := c.Write(b)
				b = b[n:]
				var ne net.Error
				switch {
				case err == nil:
				case !stalled && errors.As(err, &ne) && ne.Timeout():
					stalled = true
					c.SetWriteDeadline(time.Time{})
					blocked <- i*len(req) + len(req) - len(b)
				default:
					wrote <- err
					return
				}
			}
		}
		wrote <- nil
	}()

	// The replies of a million GETs (18 MB) overflow the socket buffers
	// (about 10 MB on loopback), so the server must stop reading; those of
	// the race detector's 100,000 may fit, and then it need not.
	writeErr := error(nil)
	writerDone := false
	select {
	case taken := <-blocked:
		t.Logf("the server stopped reading after %d of %d GETs (%d KiB, socket buffers included)", taken/(len(req)/1000), total, taken>>10)
	case writeErr = <-wrote:
		writerDone = true
		if writeErr != nil || !raceEnabled {
			t.Fatalf("all %d GETs were taken without a reply read (err %v): the server does not push back", total, writeErr)
		}
		t.Logf("all %d GETs were taken: their %d KiB of replies fit in the socket buffers", total, total/1000*len(reply)>>10)
	case <-time.After(30 * time.Second):
		t.Fatal("the writer neither finished nor stalled within 30 s")
	}
	by.progress(t, 20) // served while the pipeliner is stuck
	mem.sample()

	// Now read: every reply, in order, then the writer finishes.
	c.SetReadDeadline(time.Now().Add(120 * time.Second))
	rd := bufio.NewReaderSize(c, 64<<10)
	got := make([]byte, len(reply))
	for i := 0; i < total/1000; i++ {
		if _, err := io.ReadFull(rd, got); err != nil || !bytes.Equal(got, reply) {
			t.Fatalf("replies to batch %d of %d: %v; got %.200q, want %.200q", i+1, total/1000, err, got, reply)
		}
	}
	if !writerDone {
		writeErr = <-wrote
	}
	if writeErr != nil {
		t.Fatalf("writing the GETs: %v", writeErr)
	}
	elapsed := time.Since(start)
	by.check(t)
	mem.check(t, fmt.Sprintf("%d pipelined GETs, unread until the server stopped reading", total), 8<<20, rssBound(24<<20))
	t.Logf("%d pipelined GETs answered in %v", total, elapsed.Round(time.Millisecond))
}

// TestHostilePipelineNeverRead: a client pipelines GETs and never reads a
// reply. Once its socket buffers are full it neither sends nor reads, so
// the idle timeout closes it (no reply can be sent: it is not reading),
// and the server is back to its bystander alone.
func TestHostilePipelineNeverRead(t *testing.T) {
	// Seconds: the bystander shares the server, and must not be closed as
	// idle when a loaded machine does not run it for a second or so.
	const idle = 2 * time.Second
	s := startServer(t, Config{IdleTimeout: idle})
	req, _ := pipelineBatch(t, s, 4)
	by := startBystander(t, s)
	mem := watchMemory(t)

	c := dial(t, s.Addr())
	sent := 0
	var err error
	for sent < 1_000_000*len(req)/1000 {
		// Far longer than the idle timeout: a write stalled this long means
		// the server never closed it, not that the process was descheduled.
		c.SetWriteDeadline(time.Now().Add(idle + 10*time.Second))
		var n int
		n, err = c.Write(req)
		sent += n
		if err != nil {
			break
		}
	}
	var ne net.Error
	switch {
	case err == nil:
		t.Fatalf("a million GETs were taken without a reply read: the server does not push back")
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("writes stalled for %v without the server closing the connection (idle timeout %v)", idle+10*time.Second, idle)
	}
	t.Logf("after %d KiB of GETs, the write failed with %v: the server closed the connection", sent>>10, err)
	waitFor(t, 5*time.Second, func() (bool, string) {
		n := s.connectedClients()
		return n == 1, fmt.Sprintf("%d clients connected, want the bystander alone", n)
	})
	by.check(t)
	mem.check(t, "a client that never reads", 8<<20, rssBound(24<<20))
}

// TestHostileIdleConnections: 1,000 connections that send nothing, or a
// partial request of 60 KiB, and then wait. The server holds them at a
// bounded cost each (its input buffer: 4 KiB, or 64 KiB for the partial
// ones), keeps serving the bystander, and closes every one of them after
// the idle timeout, without a reply.
func TestHostileIdleConnections(t *testing.T) {
	const (
		conns   = 1000
		partial = 500             // of them send 60 KiB of a request first
		idle    = 5 * time.Second // far longer than opening them takes (0.2 s under -race on a quiet machine)
	)
	s := startServer(t, Config{IdleTimeout: idle})
	by := startBystander(t, s)
	mem := watchMemory(t)
	half := []byte(request("GET", strings.Repeat("k", 60<<10)))
	half = half[:len(half)-10]

	dialing := time.Now()
	cs := make([]net.Conn, conns)
	for i := range cs {
		cs[i] = dial(t, s.Addr())
		if i < partial {
			if _, err := cs[i].Write(half); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Before the first of them can be idle for the timeout.
	waitFor(t, time.Until(dialing.Add(idle-500*time.Millisecond)), func() (bool, string) {
		n := s.connectedClients()
		return n == conns+1, fmt.Sprintf("%d clients connected, want %d (opening them took %v; the idle timeout is %v)",
			n, conns+1, time.Since(dialing).Round(time.Millisecond), idle)
	})
	t.Logf("%d connections opened and registered in %v", conns, time.Since(dialing).Round(time.Millisecond))
	by.progress(t, 20)
	opened := time.Now()
	// What the open connections hold: the live heap after a collection.
	live := int64(heapInUse()) - int64(mem.baseHeap)
	mem.sample()
	t.Logf("%d connections open (%d with 60 KiB of a request): live heap %+.1f MiB, VmRSS %+.1f MiB",
		conns, partial, float64(live)/(1<<20), float64(mem.peakRSS.Load()-mem.baseRSS)/(1<<20))
	// Bound: 80 KiB for a connection with a partial request (its 64 KiB
	// input buffer), 16 KiB for an idle one, server and client side
	// together. The goroutine engine's stacks are not heap; VmRSS has them.
	liveBound := int64(partial*(80<<10) + (conns-partial)*(16<<10))
	if live > liveBound {
		t.Errorf("%d open connections hold %d bytes of live heap, over the bound of %d", conns, live, liveBound)
	}

	// All of them are closed after the idle timeout; none gets a reply.
	waitFor(t, idle+5*time.Second, func() (bool, string) {
		n := s.connectedClients()
		return n == 1, fmt.Sprintf("%d clients still connected %v after they went idle (idle timeout %v)", n, time.Since(opened), idle)
	})
	for i, c := range cs {
		if got := readUntilClosed(t, c, 5*time.Second); len(got) != 0 {
			t.Fatalf("idle connection %d got %q", i, got)
		}
	}
	by.check(t)
	// The heap peaks at up to twice the live heap before a collection
	// (GOGC=100); VmRSS follows the peak.
	mem.check(t, fmt.Sprintf("%d idle connections", conns), uint64(2*liveBound), rssBound(uint64(2*liveBound)))
}

// TestHostileTrickle: clients that send a request one byte at a time. The
// idle timeout counts from the last byte received, so the server treats a
// trickle by its pace: one byte every 10 s against a 300 ms idle timeout is
// closed before its second byte, without a reply; a byte every 20 ms
// against a 5 s one is a live client, and 50 of them at once are answered
// when their requests are complete, the bystander all along. A trickle
// costs the server its input buffer (4 KiB, at most MaxRequestBytes) for as
// long as it keeps pace. Both paces are far (30 and 250 times) from the
// timeout they are held against, so that a loaded machine that does not
// run the test for a second or two, more than once, does not change the
// verdict; the long timeout costs nothing, as nothing waits for it.
func TestHostileTrickle(t *testing.T) {
	const idle = 5 * time.Second
	s := startServer(t, Config{IdleTimeout: idle})
	by := startBystander(t, s)

	t.Run("one byte every 10 s", func(t *testing.T) {
		const idle, pace = 300 * time.Millisecond, 10 * time.Second
		s := startServer(t, Config{IdleTimeout: idle})
		start := time.Now() // before the dial: the server cannot close it sooner than idle after this
		c := dial(t, s.Addr())
		if _, err := c.Write([]byte("*")); err != nil {
			t.Fatal(err)
		}
		if got := readUntilClosed(t, c, pace); len(got) != 0 {
			t.Errorf("the server sent %q", got)
		}
		if took := time.Since(start); took < idle || took >= pace {
			t.Errorf("closed %v after its first byte, want between the idle timeout %v and the next byte %v later", took, idle, pace)
		} else {
			t.Logf("closed %v after its first byte", took.Round(time.Millisecond))
		}
	})

	t.Run("a byte every 20 ms", func(t *testing.T) {
		const clients = 50
		req := []byte(request("GET", "slow/key") + "PING\r\n")
		want := bulk(owner(t, s.router, "web", "slow/key")) + "+PONG\r\n"
		cs := make([]net.Conn, clients)
		for i := range cs {
			cs[i] = dial(t, s.Addr())
		}
		tick := time.NewTicker(20 * time.Millisecond) // pacing, not waiting for a condition
		defer tick.Stop()
		for i := range req {
			<-tick.C
			for _, c := range cs {
				if _, err := c.Write(req[i : i+1]); err != nil {
					t.Fatalf("byte %d of %d: %v", i+1, len(req), err)
				}
			}
		}
		for i, c := range cs {
			if got, err := readN(c, len(want), 5*time.Second); string(got) != want {
				t.Fatalf("trickling client %d: %q, %v; want %q", i, got, err, want)
			}
		}
	})
	by.check(t)
}
