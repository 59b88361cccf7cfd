package httpapi

// Hostile HTTP clients, against the API served by a real
// http.Server on 127.0.0.1:0 with serve.go's limits (timeouts shortened so
// the tests are quick). Each attack must get a 4xx, a JSON error where the
// handler answers (net/http answers some attacks itself, in plain text,
// before any handler runs), store nothing, and leave the server answering.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"ringman/hostmap"
)

// Timeouts of the server that slow clients meet: serve.go's shape (a
// whole-request read timeout, a longer write timeout so that the answer to
// a slow body can still be written), the read timeouts shortened so that
// the test is quick; the write timeout leaves seconds for the answer.
const (
	hostileReadHeaderTimeout = 300 * time.Millisecond
	hostileReadTimeout       = 600 * time.Millisecond
	hostileWriteTimeout      = hostileReadTimeout + 5*time.Second
	hostileMaxHeaderBytes    = 64 << 10 // as serve.go
)

// hostileServer serves f's API handler on a real listener with serve.go's
// limits and timeouts (10 s, 30 s, 35 s): the attacks that are not about
// time must not meet a timeout, however loaded the machine. It returns the
// address.
func hostileServer(t *testing.T, f *fixture) string {
	return hostileServerTimeouts(t, f, 10*time.Second, 30*time.Second, 35*time.Second)
}

// slowClientServer is hostileServer with the shortened timeouts above.
func slowClientServer(t *testing.T, f *fixture) string {
	return hostileServerTimeouts(t, f, hostileReadHeaderTimeout, hostileReadTimeout, hostileWriteTimeout)
}

func hostileServerTimeouts(t *testing.T, f *fixture, readHeader, read, write time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           f.srv.Config.Handler,
		ReadHeaderTimeout: readHeader,
		ReadTimeout:       read,
		WriteTimeout:      write,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    hostileMaxHeaderBytes,
		ErrorLog:          nil,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != http.ErrServerClosed {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// seed stores the overrides the hostile tests must find unchanged.
func seed(t *testing.T, f *fixture) []hostmap.Entry {
	t.Helper()
	if _, err := f.table.SetMany([]hostmap.Pair{{Host: "keep.example.com", Backend: "10.0.0.1:80"}, {Host: "*.example.com", Backend: "10.0.0.2:80"}}); err != nil {
		t.Fatal(err)
	}
	return f.table.List()
}

// stillFine checks that the server answers a new client and that the
// overrides, as the API lists them and as the table holds them, are the
// ones seeded.
func stillFine(t *testing.T, addr, what string, f *fixture, before []hostmap.Entry) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/entries.json")
	if err != nil {
		t.Fatalf("after %s: the server does not answer: %v", what, err)
	}
	defer resp.Body.Close()
	var list []Override
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after %s: GET /entries.json: %d, %v", what, resp.StatusCode, err)
	}
	if len(list) != len(before) {
		t.Errorf("after %s: GET /entries.json lists %d entries, want the %d seeded: %+v", what, len(list), len(before), list)
	}
	for i := range min(len(list), len(before)) {
		if list[i].Host != before[i].Host || list[i].Backend != before[i].Backend {
			t.Errorf("after %s: entry %d is %+v, want %+v", what, i, list[i], before[i])
		}
	}
	f.unchanged(t, what, before)
}

// jsonError checks that resp is a 4xx with a one-line JSON error.
func jsonError(t *testing.T, what string, resp *http.Response, body []byte) string {
	t.Helper()
	var e Error
	if resp.StatusCode < 400 || resp.StatusCode > 499 || resp.Header.Get("Content-Type") != "application/json" ||
		json.Unmarshal(body, &e) != nil || e.Error == "" || strings.ContainsAny(e.Error, "\r\n") {
		t.Errorf("%s: %d (%s) %.300q, want a 4xx with a one-line JSON error", what, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	return e.Error
}

// rawRequest writes req on a new connection (in the background: the
// server may answer and close before it has read all of it), then reads
// one response. pace, when positive, writes one byte at a time that often.
func rawRequest(t *testing.T, addr string, req []byte, pace time.Duration) (*http.Response, []byte, time.Duration) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stop := make(chan struct{})
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		if pace <= 0 {
			c.Write(req)
			return
		}
		tick := time.NewTicker(pace) // pacing the client, not waiting for a condition
		defer tick.Stop()
		for i := range req {
			if _, err := c.Write(req[i : i+1]); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { close(stop); <-wrote }()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, nil, time.Since(start)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, body, time.Since(start)
}

// TestHostileSlowBody: a body sent one byte every 250 ms, slower than the
// read timeout allows for the whole request, is cut off at the read
// timeout with a 408 JSON error; nothing is stored. Headers sent as slowly
// are cut off at the header timeout by net/http itself (with its plain-text
// 400, or no answer), before any handler runs. Either is answered within
// 5 s of its timeout (slack for a loaded machine), long before the whole
// request (13 s) could have been sent.
func TestHostileSlowBody(t *testing.T) {
	const slack = 5 * time.Second
	f := newFixture(t, "")
	addr := slowClientServer(t, f)
	before := seed(t, f)

	body := entryJSON("slow.example.com", "10.0.0.5:3000")
	req := fmt.Sprintf("POST /entries.json HTTP/1.1\r\nHost: ringman\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(250 * time.Millisecond) // pacing the client: 53 bytes, 13 s
		defer tick.Stop()
		for i := range len(body) {
			if _, err := io.WriteString(c, body[i:i+1]); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("slow body: no answer after %v: %v", time.Since(start), err)
	}
	raw, _ := io.ReadAll(resp.Body)
	took := time.Since(start)
	if msg := jsonError(t, "slow body", resp, raw); resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("slow body: %d %q, want 408", resp.StatusCode, msg)
	}
	if took > hostileReadTimeout+slack {
		t.Errorf("slow body answered after %v; the read timeout is %v", took, hostileReadTimeout)
	}
	t.Logf("slow body: %d %s after %v (read timeout %v)", resp.StatusCode, bytes.TrimSpace(raw), took.Round(time.Millisecond), hostileReadTimeout)
	stillFine(t, addr, "a slow body", f, before)

	// Slow headers.
	resp, raw, took = rawRequest(t, addr, []byte("POST /entries.json HTTP/1.1\r\nHost: ringman\r\nContent-Length: 2\r\n\r\n{}"), 200*time.Millisecond) // 67 bytes, 13 s
	answer := "no answer"
	if resp != nil {
		answer = fmt.Sprintf("%d %q", resp.StatusCode, raw)
		if resp.StatusCode < 400 || resp.StatusCode > 499 {
			t.Errorf("slow headers: answered %s, want a 4xx or none", answer)
		}
	}
	if took > hostileReadHeaderTimeout+slack {
		t.Errorf("slow headers: closed after %v; the header timeout is %v", took, hostileReadHeaderTimeout)
	}
	t.Logf("slow headers: net/http closed the connection after %v (header timeout %v) with %s", took.Round(time.Millisecond), hostileReadHeaderTimeout, answer)
	stillFine(t, addr, "slow headers", f, before)
}

// TestHostileHugeHeaders: headers over MaxHeaderBytes (64 KiB in serve.go)
// get net/http's 431, in plain text, before the handler runs; a write
// behind them is not made.
func TestHostileHugeHeaders(t *testing.T) {
	f := newFixture(t, "")
	addr := hostileServer(t, f)
	before := seed(t, f)
	body := entryJSON("huge.example.com", "10.0.0.5:3000")
	for _, tt := range []struct{ name, headers string }{
		{"one header of 1.5 MiB", "X-Pad: " + strings.Repeat("a", 3<<19) + "\r\n"},
		{"20,000 headers (1.2 MiB)", strings.Repeat("X-Pad: 0123456789abcdefghijklmnopqrstuvwxyz0123456789\r\n", 20000)},
		{"a cookie of 1.1 MiB", "Cookie: " + strings.Repeat("k=v; ", 230000) + "\r\n"},
	} {
		req := "POST /entries.json HTTP/1.1\r\nHost: ringman\r\n" + tt.headers +
			fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body)
		resp, raw, _ := rawRequest(t, addr, []byte(req), 0)
		if resp == nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%s: %v %q, want 431", tt.name, resp, raw)
		}
		stillFine(t, addr, tt.name, f, before)
	}
}

// TestHostileBodies: bodies that are malformed, ambiguous or oversized in
// every way a JSON decoder can be pushed, each refused with a 4xx JSON
// error that says why, and nothing stored.
func TestHostileBodies(t *testing.T) {
	f := newFixture(t, "")
	addr := hostileServer(t, f)
	before := seed(t, f)
	long := strings.Repeat("a", 10000)
	tests := []struct {
		name, body string
		code       int
		errPart    string
	}{
		{"invalid UTF-8 in the host", `{"host":"ke` + "\xff" + `p.example.com","backend":"10.0.0.5:3000"}`, 400, "UTF-8"},
		{"invalid UTF-8 in the backend", `{"host":"new.example.com","backend":"10.0.0.5` + "\xc3\x28" + `:3000"}`, 400, "UTF-8"},
		{"invalid UTF-8 in a name", `{"ho` + "\xfe" + `st":"new.example.com","backend":"10.0.0.5:3000"}`, 400, "UTF-8"},
		{"overlong UTF-8 for '.'", `{"host":"new` + "\xc0\xae" + `example.com","backend":"10.0.0.5:3000"}`, 400, "UTF-8"},
		{"UTF-16 body", "\xff\xfe{\x00\"\x00h\x00", 400, "UTF-8"},
		{"a byte-order mark", "\xef\xbb\xbf" + entryJSON("new.example.com", "10.0.0.5:3000"), 400, "invalid JSON"},
		{"a lone surrogate escape in the host", `{"host":"new\ud800.example.com","backend":"10.0.0.5:3000"}`, 400, "host: "},
		{"a NUL escape in the host", `{"host":"new.example.com\u0000","backend":"10.0.0.5:3000"}`, 400, "host: "},
		{"the Kelvin sign for a K", `{"host":"\u212aeep.example.com","backend":"10.0.0.5:3000"}`, 400, "host: "},
		{"1,000,000 nested arrays, unclosed", strings.Repeat("[", 1000000), 400, "depth"},
		{"1,000,000 nested arrays", strings.Repeat("[", 1000000) + strings.Repeat("]", 1000000), 413, "over"},
		{"9,000 nested arrays", strings.Repeat("[", 9000) + strings.Repeat("]", 9000), 400, "entry 0"},
		{"100,000 nested objects", strings.Repeat(`{"a":`, 100000), 400, "depth"},
		{"a repeated name", `{"host":"new.example.com","host":"keep.example.com","backend":"10.0.0.5:3000"}`, 400, "more than once"},
		{"a repeated name in another case", `{"host":"new.example.com","HOST":"keep.example.com","backend":"10.0.0.5:3000"}`, 400, "unknown field"},
		{"a name in another case", `{"Host":"new.example.com","backend":"10.0.0.5:3000"}`, 400, "unknown field"},
		{"a name matched by Unicode folding", `{"ho\u017ft":"new.example.com","backend":"10.0.0.5:3000"}`, 400, "unknown field"},
		{"a repeated name in a bulk import", `[{"host":"new.example.com","backend":"10.0.0.5:3000","backend":"10.0.0.6:3000"}]`, 400, "entry 0"},
		{"a number for the host", `{"host":1,"backend":"10.0.0.5:3000"}`, 400, "invalid JSON"},
		{"a number for the backend", `{"host":"new.example.com","backend":3000}`, 400, "invalid JSON"},
		{"a huge number for the backend", `{"host":"new.example.com","backend":1e999}`, 400, "invalid JSON"},
		{"true for the host", `{"host":true,"backend":"10.0.0.5:3000"}`, 400, "invalid JSON"},
		{"an object for the host", `{"host":{"name":"new.example.com"},"backend":"10.0.0.5:3000"}`, 400, "invalid JSON"},
		{"an array for the backend", `{"host":"new.example.com","backend":["10.0.0.5:3000"]}`, 400, "invalid JSON"},
		{"null for the host", `{"host":null,"backend":"10.0.0.5:3000"}`, 400, "host: "},
		{"a host of 10,000 characters", entryJSON(long+".com", "10.0.0.5:3000"), 400, "host: is longer than 253 bytes"},
		{"a backend of 10,000 characters", entryJSON("new.example.com", long+":3000"), 400, "backend: "},
		{"a port of 10,000 digits", entryJSON("new.example.com", "h:"+strings.Repeat("9", 10000)), 400, "backend: "},
		{"a stray brace after the value", entryJSON("new.example.com", "10.0.0.5:3000") + "}", 400, "after the value"},
		{"a stray bracket after the value", entryJSON("new.example.com", "10.0.0.5:3000") + "]", 400, "after the value"},
		{"10,000 entries, the last one bad", "[" + strings.Repeat(entryJSON("new.example.com", "10.0.0.5:3000")+",", 9999) + entryJSON("x", "y") + "]", 400, "entry 9999"},
	}
	c := &http.Client{Timeout: 10 * time.Second}
	for _, tt := range tests {
		resp, err := c.Post("http://"+addr+"/entries.json", "application/json", strings.NewReader(tt.body))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		msg := jsonError(t, tt.name, resp, raw)
		if resp.StatusCode != tt.code || !strings.Contains(msg, tt.errPart) {
			t.Errorf("%s: %d %q, want %d and an error that mentions %q", tt.name, resp.StatusCode, msg, tt.code, tt.errPart)
		}
		if len(msg) > 500 {
			t.Errorf("%s: the error is %d bytes long", tt.name, len(msg))
		}
		stillFine(t, addr, tt.name, f, before)
	}
}

// TestHostilePaths: GET and DELETE of /entries/<host>.json with traversal,
// NULs, encoded slashes and the like never reach another entry (or a
// file): a 4xx with a JSON error, and the overrides stay as they were.
// Requests net/http cannot parse get its own plain-text 400.
func TestHostilePaths(t *testing.T) {
	f := newFixture(t, "")
	addr := hostileServer(t, f)
	before := seed(t, f)
	long := strings.Repeat("a", 10000)
	targets := []string{
		"/entries/..%2f..%2fetc%2fpasswd.json",
		"/entries/..%2F..%2Fkeep.example.com.json",
		"/entries/..%2fkeep.example.com.json",
		"/entries/%2e%2e%2fkeep.example.com.json",
		"/entries/%2e%2e/keep.example.com.json",
		"/entries/..%5c..%5cetc%5cpasswd.json",
		"/entries/%252e%252e%252fkeep.example.com.json",
		"/entries/%c0%ae%c0%ae%c0%afkeep.example.com.json",
		"/entries/keep.example.com%00.json",
		"/entries/%00.json",
		"/entries/keep%00.example.com.json",
		"/entries/keep.example.com.json%00",
		"/entries/keep.example.com%2f.json",
		"/entries/keep.example.com%2F..%2F.json",
		"/entries//keep.example.com.json",
		"//entries/keep.example.com.json",
		"/entries/./keep.example.com.json",
		"/entries/../entries/keep.example.com.json",
		"/entries/keep.example.com/.json",
		"/entries/keep.example.com.json/",
		"/entries/keep.example.com;.json",
		"/entries/keep.example.com%0d%0aX-Injected:%201.json",
		"/entries/%2A.json",
		"/entries/*.json",
		"/entries/**.example.com.json",
		"/entries/" + long + ".json",
		"/entries/" + long + ".example.com.json",
		"/entries/" + strings.Repeat("%2e", 3000) + ".json",
	}
	c := &http.Client{Timeout: 10 * time.Second}
	for _, target := range targets {
		for _, method := range []string{"GET", "DELETE"} {
			req, err := http.NewRequest(method, "http://"+addr+target, nil)
			if err != nil {
				t.Fatalf("%s %.80s: %v", method, target, err)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s %.80s: %v", method, target, err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			what := fmt.Sprintf("%s %.80s", method, target)
			jsonError(t, what, resp, raw)
			stillFine(t, addr, what, f, before)
		}
	}

	// What the client library would not send, on a raw socket.
	for _, line := range []string{
		"DELETE /entries/../../keep.example.com.json HTTP/1.1",
		"DELETE /entries/..\\..\\keep.example.com.json HTTP/1.1",
		"DELETE /entries/keep.example.com\x00.json HTTP/1.1",
		"DELETE /entries/keep.example.com .json HTTP/1.1",
		"DELETE /entries/keep.example.com\xff.json HTTP/1.1",
		"DELETE /entries/%zz.json HTTP/1.1",
		"DELETE http://ringman/entries/../keep.example.com.json HTTP/1.1",
		"DELETE * HTTP/1.1",
	} {
		resp, raw, _ := rawRequest(t, addr, []byte(line+"\r\nHost: ringman\r\n\r\n"), 0)
		if resp == nil || resp.StatusCode < 400 || resp.StatusCode > 499 {
			t.Errorf("%q: %v %q, want a 4xx", line, resp, raw)
		} else if resp.Header.Get("Content-Type") == "application/json" {
			jsonError(t, fmt.Sprintf("%q", line), resp, raw)
		}
		stillFine(t, addr, fmt.Sprintf("%q", line), f, before)
	}
}
