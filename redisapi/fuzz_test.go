package redisapi

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// memConn is a net.Conn that hands out input in chunks of a fixed size and
// records what is written: serveConn without sockets, for fuzzing.
type memConn struct {
	in    []byte
	chunk int
	out   bytes.Buffer
}

func (m *memConn) Read(p []byte) (int, error) {
	if len(m.in) == 0 {
		return 0, io.EOF
	}
	n := copy(p, m.in[:min(len(m.in), m.chunk)])
	m.in = m.in[n:]
	return n, nil
}
func (m *memConn) Write(p []byte) (int, error)      { return m.out.Write(p) }
func (m *memConn) Close() error                     { return nil }
func (m *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (m *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (m *memConn) SetDeadline(time.Time) error      { return nil }
func (m *memConn) SetReadDeadline(time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(time.Time) error { return nil }

// serveBytes runs one connection over input, read chunk bytes at a time,
// and returns everything the server wrote.
func serveBytes(t testing.TB, s *Server, input []byte, chunk int) []byte {
	if s.eventLoop {
		return serveBytesOverSocket(t, s, input, chunk)
	}
	m := &memConn{in: input, chunk: max(chunk, 1)}
	c := newConn(s, m)
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.wg.Add(1)
	s.serveConn(c)
	return m.out.Bytes()
}

// serveBytesOverSocket is serveBytes for the event loop, which serves only
// sockets: it sends input on a new connection, half-closes, and reads until
// the server closes. The server reads at most chunk bytes at a time.
func serveBytesOverSocket(t testing.TB, s *Server, input []byte, chunk int) []byte {
	t.Helper()
	s.testReadLimit.Store(int64(max(chunk, 1)))
	c := dial(t, s.Addr())
	defer c.Close()
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		c.Write(input) // fails when the server hangs up first (QUIT, errors)
		c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	out, err := io.ReadAll(c)
	<-wrote
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("input %q: the server did not close within 10 s; read %q", input, out)
	}
	return out // EOF, or a reset after everything was read
}

// newFuzzServer is a server for serveBytes. The event loop's is serving,
// on a unix socket (cheaper than TCP when fuzzing); the goroutine engine's
// does not need to.
func newFuzzServer(t testing.TB) *Server {
	addr := "127.0.0.1:0"
	if path := filepath.Join(t.TempDir(), "f.sock"); useEventLoop && len(path) < 100 {
		addr = "unix:" + path
	}
	s, err := Listen(Config{Addr: addr, Router: newTestRouter(t), RequirePass: "", DBs: map[int]string{1: "thumbs"}})
	if err != nil {
		t.Fatal(err)
	}
	if !s.eventLoop {
		t.Cleanup(func() { s.Close() })
		return s
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after Close, want nil", err)
		}
	})
	return s
}

// checkReplies parses out as a sequence of RESP2 replies and returns how
// many there are. Any malformed reply is an error.
func checkReplies(out []byte) (int, error) {
	rd := bufio.NewReader(bytes.NewReader(out))
	n := 0
	for {
		if _, err := rd.Peek(1); err == io.EOF {
			return n, nil
		}
		if err := readReply(rd, 0); err != nil {
			return n, err
		}
		n++
	}
}

func readReply(rd *bufio.Reader, depth int) error {
	if depth > 10 {
		return errors.New("replies nested too deep")
	}
	line, err := rd.ReadBytes('\n')
	if err != nil {
		return err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return errors.New("reply line without CRLF: " + strconv.Quote(string(line)))
	}
	body := line[1 : len(line)-2]
	if bytes.ContainsAny(body, "\r\n") {
		return errors.New("line break inside a reply line: " + strconv.Quote(string(line)))
	}
	switch line[0] {
	case '+', '-':
		return nil
	case ':':
		_, err := strconv.ParseInt(string(body), 10, 64)
		return err
	case '$':
		n, err := strconv.Atoi(string(body))
		if err != nil || n < -1 {
			return errors.New("bad bulk length " + strconv.Quote(string(body)))
		}
		if n == -1 {
			return nil
		}
		data := make([]byte, n+2)
		if _, err := io.ReadFull(rd, data); err != nil {
			return err
		}
		if data[n] != '\r' || data[n+1] != '\n' {
			return errors.New("bulk without CRLF")
		}
		return nil
	case '*':
		n, err := strconv.Atoi(string(body))
		if err != nil || n < -1 {
			return errors.New("bad array length " + strconv.Quote(string(body)))
		}
		for i := 0; i < n; i++ {
			if err := readReply(rd, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return errors.New("unknown reply type " + strconv.Quote(string(line)))
}

// FuzzServe feeds any bytes to a connection. The server must not panic,
// must answer with well-formed RESP, and must answer the same whether the
// bytes arrive at once or in small pieces (the parser resumes correctly).
// It returns when the input ends, so it never waits for more: every
// complete request got its reply or the connection was closed.
func FuzzServe(f *testing.F) {
	for _, seed := range []string{
		request("GET", "/a/b"),
		"select 0\r\nget /some/key\r\n",
		request("auth", "pw") + request("select", "1") + request("get", "%2Fpath%20x"),
		request("MGET", "a", "b", "c") + request("RING.LOOKUP", "k", "3", "thumbs") + request("RING.MEMBERS"),
		request("HELLO", "2", "SETNAME", "x") + request("CLIENT", "SETINFO", "LIB-NAME", "go-redis") + request("CLIENT", "GETNAME"),
		request("COMMAND") + request("COMMAND", "DOCS") + request("INFO", "server") + request("HELLO", "3"),
		"PING\r\nECHO \"a\\x41\\n\"\r\nECHO 'it\\'s'\r\nQUIT\r\nPING\r\n",
		"*1\r\n$-2\r\n",
		"*2\r\n$3\r\nget\r\n$2147483648\r\n",
		"*0\r\n*-1\r\n\r\n\n",
		"nosuch a b\r\n",
	} {
		f.Add([]byte(seed), uint8(1))
		f.Add([]byte(seed), uint8(7))
	}
	s := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, input []byte, chunk uint8) {
		whole := serveBytes(t, s, input, len(input))
		pieces := serveBytes(t, s, input, int(chunk))
		if !bytes.Equal(whole, pieces) {
			// Replies that depend on time or connection counts differ.
			if !bytes.Contains(input, []byte("INFO")) && !bytes.Contains(bytes.ToLower(input), []byte("info")) &&
				!bytes.Contains(bytes.ToLower(input), []byte("hello")) && !bytes.Contains(bytes.ToLower(input), []byte("client")) {
				t.Fatalf("input %q: whole %q, in pieces of %d: %q", input, whole, chunk, pieces)
			}
		}
		if _, err := checkReplies(whole); err != nil {
			t.Fatalf("input %q: malformed reply %q: %v", input, whole, err)
		}
		if n := s.panics.total(); n != 0 {
			t.Fatalf("input %q: %d panics", input, n)
		}
	})
}
