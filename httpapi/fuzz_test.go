package httpapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"ringman/hostmap"
	"ringman/ring"
	"ringman/router"
	"ringman/store"
)

// More seeds for both targets live in testdata/fuzz/<FuzzName>.

// fuzzAPI is the API handler over a real override table in a bbolt file of
// the fuzz run's own, holding keepEntries. No cluster: the /entries routes
// do not use it.
func fuzzAPI(f *testing.F) (http.Handler, *hostmap.Table) {
	st, err := store.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	table, err := hostmap.Open(st.DB(), hostmap.Options{Node: "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { table.Close() })
	if _, err := table.SetMany(keepEntries); err != nil {
		f.Fatal(err)
	}
	rt, err := router.New(ring.DefaultSettings(), "web")
	if err != nil {
		f.Fatal(err)
	}
	rt.SetOverrides(table)
	return New(Config{Router: rt, Overrides: table}), table
}

// keepEntries are in the fuzz tables from the start.
var keepEntries = []hostmap.Pair{{Host: "keep.example.com", Backend: "10.9.9.9:9"}, {Host: "*.example.com", Backend: "10.9.9.8:8"}}

// restore puts the table back to keepEntries after a request that changed it.
func restore(t *testing.T, table *hostmap.Table) {
	t.Helper()
	keep := map[string]bool{}
	for _, p := range keepEntries {
		keep[p.Host] = true
	}
	for _, e := range table.List() {
		if !keep[e.Host] {
			if _, err := table.Delete(e.Host); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := table.SetMany(keepEntries); err != nil {
		t.Fatal(err)
	}
}

// serve runs one request through the handler and checks what every answer
// of the API must be: JSON, and for an error, a non-empty one-line message
// in {"error":...}.
func serve(t *testing.T, h http.Handler, req *http.Request) (int, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body := rec.Body.Bytes()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, body %.200q", req.Method, req.URL, ct, body)
	}
	if !json.Valid(body) {
		t.Fatalf("%s %s: %d with a body that is not JSON: %.200q", req.Method, req.URL, rec.Code, body)
	}
	if rec.Code >= 400 {
		var e Error
		if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
			t.Fatalf("%s %s: %d with %.200q, want {\"error\":...}", req.Method, req.URL, rec.Code, body)
		}
		if strings.ContainsAny(e.Error, "\r\n") {
			t.Fatalf("%s %s: %d with %.200q, want a one-line error", req.Method, req.URL, rec.Code, body)
		}
	}
	return rec.Code, body
}

// FuzzEntriesBody posts any body to POST /entries.json. A refused body gets
// a 4xx with a JSON error and changes nothing. An accepted one is valid
// UTF-8 JSON without repeated names, a {"host","backend"} object or a
// non-empty array of them; the answer is the entries as stored, which
// the table then holds, each host normalised.
func FuzzEntriesBody(f *testing.F) {
	for _, s := range []string{
		`{"host":"some.host.com","backend":"10.0.0.5:3000"}`,
		` {"host":"Some.Host.COM.","backend":"[::1]:80"} `,
		`[{"host":"a.example.org","backend":"h:1"},{"host":"*.b.example.org","backend":"h:2"}]`,
		`{"host":"a.com","host":"b.com","backend":"h:1"}`,
		`{"host":"a.com","HOST":"b.com","backend":"h:1"}`,
		`{"Host":"a.com","Backend":"h:1"}`,
		`{"host":1,"backend":"h:1"}`,
		`{"host":"a.com","backend":3000}`,
		`{"host":null,"backend":"h:1"}`,
		`{"host":"a\xff.com","backend":"h:1"}`,
		`{"host":"a.com","backend":"h\xc0\x80:1"}`,
		`{"host":"a.com","backend":"h:1"}}`,
		`{"host":"a.com","backend":"h:1"}]`,
		`{"host":"a.com","backend":"h:1"} x`,
		`[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]`,
		`[]`, `{}`, `null`, `"a.com"`, `[{"host":"a.com","backend":"h:1"},7]`,
		`{"host":"keep.example.com","backend":"h:1"}`,
		`{"host":"\u212a.com","backend":"h:1"}`,
		`{"host":"a.com","backend":"h:+1"}`,
		`{"host":"a.com","backend":"[1.2.3.4]:80"}`,
		`{"host":"a.com","backend":"h:1","x":{"y":[1,2,{"z":null}]}}`,
	} {
		f.Add([]byte(s))
	}
	h, table := fuzzAPI(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		before := table.List()
		code, answer := serve(t, h, httptest.NewRequest("POST", "/entries.json", bytes.NewReader(body)))
		switch {
		case code == 400 || code == 413:
			if after := table.List(); !reflect.DeepEqual(before, after) {
				t.Fatalf("body %q: %d %s, but the table changed:\nbefore %+v\nafter  %+v", body, code, answer, before, after)
			}
			return
		case code != 200 && code != 201:
			t.Fatalf("body %q: %d %s, want 200, 201, 400 or 413", body, code, answer)
		}
		defer restore(t, table)
		if !utf8.Valid(body) {
			t.Fatalf("body %q is not UTF-8 but was accepted", body)
		}
		if dup := repeatedName(body); dup != "" {
			t.Fatalf("body %q repeats the name %q but was accepted", body, dup)
		}
		// What encoding/json makes of the body is what must have been stored.
		var pairs []hostmap.Pair
		var answered []Override
		if trimmed := bytes.TrimLeft(body, " \t\r\n"); trimmed[0] == '[' {
			if json.Unmarshal(body, &pairs) != nil || json.Unmarshal(answer, &answered) != nil || code != 200 {
				t.Fatalf("bulk body %q: %d %s", body, code, answer)
			}
		} else {
			var p hostmap.Pair
			var o Override
			if json.Unmarshal(body, &p) != nil || json.Unmarshal(answer, &o) != nil {
				t.Fatalf("body %q: %d %s", body, code, answer)
			}
			pairs, answered = []hostmap.Pair{p}, []Override{o}
		}
		if len(pairs) == 0 || len(answered) != len(pairs) {
			t.Fatalf("body %q (%d pairs) answered %d entries: %s", body, len(pairs), len(answered), answer)
		}
		for i, p := range pairs {
			host, err := hostmap.NormalizeHost(p.Host)
			if err != nil || hostmap.ValidateBackend(p.Backend) != nil {
				t.Fatalf("body %q: entry %d %+v is invalid but was accepted", body, i, p)
			}
			if answered[i].Host != host || answered[i].Backend != p.Backend {
				t.Fatalf("body %q: entry %d answered as %+v, want host %q backend %q", body, i, answered[i], host, p.Backend)
			}
		}
		// In a bulk import a later entry for the same host wins.
		for i, p := range pairs {
			host, _ := hostmap.NormalizeHost(p.Host)
			last := i
			for j := i + 1; j < len(pairs); j++ {
				if h, _ := hostmap.NormalizeHost(pairs[j].Host); h == host {
					last = j
				}
			}
			if e, ok := table.Get(host); !ok || e.Backend != pairs[last].Backend {
				t.Fatalf("body %q: table has %+v, %v for %q, want backend %q", body, e, ok, host, pairs[last].Backend)
			}
		}
	})
}

// repeatedName returns a name that appears twice in one JSON object of b
// (compared as encoding/json matches field names: case-insensitively), or "".
func repeatedName(b []byte) string {
	dec := json.NewDecoder(bytes.NewReader(b))
	type object struct {
		names map[string]bool
		key   bool // the next string token is a name
	}
	var stack []*object
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		var top *object
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		isKey := top != nil && top.key
		if top != nil {
			top.key = !top.key // a name, then its value
		}
		switch tok := tok.(type) {
		case json.Delim:
			switch tok {
			case '{':
				stack = append(stack, &object{names: map[string]bool{}, key: true})
			case '[':
				stack = append(stack, nil)
			case '}', ']':
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1] != nil {
					stack[len(stack)-1].key = true
				}
				continue
			}
			if top != nil && !isKey {
				top.key = false // the value is a container: the next name follows it
			}
		case string:
			if isKey {
				if name := strings.ToLower(tok); top.names[name] {
					return tok
				} else {
					top.names[name] = true
				}
			}
		}
	}
}

// FuzzEntryPath sends GET and DELETE for any request target under
// /entries/. Every answer is JSON; no answer is a 5xx; only a 200 DELETE
// changes the table, and it removes exactly the entry of the host the
// path names.
func FuzzEntryPath(f *testing.F) {
	for _, s := range []string{
		"/entries/keep.example.com.json", "/entries/KEEP.Example.com..json", "/entries/%2A.example.com.json",
		"/entries/..%2f..%2fetc%2fpasswd.json", "/entries/..%2F..%2Fetc.json", "/entries/%00.json", "/entries/a%00b.json",
		"/entries//keep.example.com.json", "/entries/keep.example.com%2f.json", "/entries/%2e%2e.json",
		"/entries/%252e%252e%252fetc.json", "/entries/..\\..\\etc.json", "/entries/a%5c..%5cb.json",
		"/entries/" + strings.Repeat("a", 10000) + ".json", "/entries/%C0%AE%C0%AE%2Fetc.json", "/entries/.json",
		"/entries/keep.example.com.json?x=../../", "/entries/keep.example.com.json#frag", "//entries/keep.example.com.json",
		"/entries/./keep.example.com.json", "/entries/../entries/keep.example.com.json", "http://x/entries/keep.example.com.json",
		"*", "/entries/%ZZ.json",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	h, table := fuzzAPI(f)
	f.Fuzz(func(t *testing.T, target string, del bool) {
		method := "GET"
		if del {
			method = "DELETE"
		}
		// Parsed as the server parses what arrives on a socket; what it
		// cannot parse never reaches the handler (net/http answers 400).
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(method + " " + target + " HTTP/1.1\r\nHost: ringman\r\n\r\n")))
		if err != nil || req.URL.Path == "/" || req.URL.Path == "/metrics" {
			return // the index and the metrics are text
		}
		before := table.List()
		code, answer := serve(t, h, req)
		if code >= 500 {
			t.Fatalf("%s %q: %d %s", method, target, code, answer)
		}
		after := table.List()
		if !del || code != 200 {
			if !reflect.DeepEqual(before, after) {
				t.Fatalf("%s %q: %d %s, but the table changed", method, target, code, answer)
			}
			return
		}
		defer restore(t, table)
		var o Override
		if err := json.Unmarshal(answer, &o); err != nil {
			t.Fatalf("%s %q: %s", method, target, answer)
		}
		name, ok := strings.CutSuffix(req.URL.Path, ".json")
		host, err := hostmap.NormalizeHost(strings.TrimPrefix(name, "/entries/"))
		if !ok || err != nil || o.Host != host || len(after) != len(before)-1 {
			t.Fatalf("%s %q (path %q) removed %+v: %d entries before, %d after", method, target, req.URL.Path, o, len(before), len(after))
		}
		if _, found := table.Get(host); found {
			t.Fatalf("%s %q answered 200 but %q is still there", method, target, host)
		}
	})
}
