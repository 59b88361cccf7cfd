package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"ringman/hostmap"
)

// entryJSON is a POST /entries.json body.
func entryJSON(host, backend string) string {
	raw, _ := json.Marshal(hostmap.Pair{Host: host, Backend: backend})
	return string(raw)
}

// decodeError returns the message of an error body, or fails.
func decodeError(t *testing.T, what, body string) string {
	t.Helper()
	var e Error
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
		t.Errorf("%s: body %q is not a JSON error", what, body)
	}
	return e.Error
}

// unchanged fails when the table differs from before.
func (f *fixture) unchanged(t *testing.T, what string, before []hostmap.Entry) {
	t.Helper()
	if after := f.table.List(); !reflect.DeepEqual(before, after) {
		t.Errorf("%s changed the overrides:\nbefore %+v\nafter  %+v", what, before, after)
	}
}

func TestEntriesValidation(t *testing.T) {
	f := newFixture(t, "")
	label := func(n int) string { return strings.Repeat("a", n) }
	host253 := label(63) + "." + label(63) + "." + label(63) + "." + label(61)
	host254 := label(63) + "." + label(63) + "." + label(63) + "." + label(62)
	if len(host253) != 253 || len(host254) != 254 {
		t.Fatal("test hosts have the wrong length")
	}
	good := []struct{ host, backend, stored string }{
		{"some.host.com", "10.0.0.5:3000", "some.host.com"},
		{"Some.Host.COM", "10.0.0.6:3000", "some.host.com"}, // replaces the first
		{"*.example.com", "localhost:3000", "*.example.com"},
		{"localhost", "127.0.0.1:1", "localhost"},
		{"xn--bcher-kva.example", "[::1]:65535", "xn--bcher-kva.example"},
		{"a-b.example.com.", "backend-1.internal:8080", "a-b.example.com"},
		{host253, "10.0.0.5:3000", host253},
	}
	for _, tt := range good {
		code, _, body := f.do(t, "POST", "/entries.json", entryJSON(tt.host, tt.backend))
		var o Override
		if code/100 != 2 || json.Unmarshal([]byte(body), &o) != nil {
			t.Errorf("POST host %q backend %q: %d %s, want 2xx", tt.host, tt.backend, code, body)
			continue
		}
		if o.Host != tt.stored || o.Backend != tt.backend || o.Node != "api-test" || o.Version == "" || o.UpdatedAt.IsZero() {
			t.Errorf("POST host %q backend %q: answered %+v, want host %q", tt.host, tt.backend, o, tt.stored)
		}
		if e, ok := f.table.Get(tt.stored); !ok || e.Backend != tt.backend {
			t.Errorf("POST host %q: table has %+v, %v", tt.host, e, ok)
		}
	}

	bad := []struct{ host, backend, field string }{
		{"a..b", "10.0.0.5:3000", "host"},
		{"-a.com", "10.0.0.5:3000", "host"},
		{"a-.com", "10.0.0.5:3000", "host"},
		{host254, "10.0.0.5:3000", "host"},
		{label(64) + ".com", "10.0.0.5:3000", "host"},
		{"*.", "10.0.0.5:3000", "host"},
		{"*", "10.0.0.5:3000", "host"},
		{"a.*.com", "10.0.0.5:3000", "host"},
		{"**.example.com", "10.0.0.5:3000", "host"},
		{"", "10.0.0.5:3000", "host"},
		{" some.host.com", "10.0.0.5:3000", "host"},
		{"some host.com", "10.0.0.5:3000", "host"},
		{"bücher.example", "10.0.0.5:3000", "host"},
		{"some.host.com/x", "10.0.0.5:3000", "host"},
		{"some.host.com:80", "10.0.0.5:3000", "host"},
		{"../../etc/passwd", "10.0.0.5:3000", "host"},
		{"new.example.com", "10.0.0.5", "backend"},
		{"new.example.com", "10.0.0.5:0", "backend"},
		{"new.example.com", "10.0.0.5:65536", "backend"},
		{"new.example.com", "10.0.0.5:x", "backend"},
		{"new.example.com", "10.0.0.5:-1", "backend"},
		{"new.example.com", ":3000", "backend"},
		{"new.example.com", "", "backend"},
		{"new.example.com", "10.0.0.5 :3000", "backend"},
		{"new.example.com", " 10.0.0.5:3000", "backend"},
		{"new.example.com", "bad host:3000", "backend"},
		{"new.example.com", "10.0.0.5:3000/x", "backend"},
	}
	for _, tt := range bad {
		before := f.table.List()
		what := fmt.Sprintf("POST host %q backend %q", tt.host, tt.backend)
		code, _, body := f.do(t, "POST", "/entries.json", entryJSON(tt.host, tt.backend))
		if code != 400 {
			t.Errorf("%s: %d %s, want 400", what, code, body)
		}
		if msg := decodeError(t, what, body); !strings.HasPrefix(msg, tt.field+": ") {
			t.Errorf("%s: error %q does not name the field %s", what, msg, tt.field)
		}
		f.unchanged(t, what, before)
	}
}

func TestEntriesCreateReplaceStatus(t *testing.T) {
	f := newFixture(t, "")
	code, hdr, body := f.do(t, "POST", "/entries.json", `{ "host": "some.host.com", "backend": "localhost:3000" }`,
		"Host", "api.example.com", "Content-Type", "application/x-www-form-urlencoded") // as curl -d sends it through nginx
	if code != 201 || hdr.Get("Location") != "/entries/some.host.com.json" || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("create: %d, Location %q, Content-Type %q, %s; want 201 with a Location", code, hdr.Get("Location"), hdr.Get("Content-Type"), body)
	}
	// host and backend come first, as set_backend sent them.
	if !strings.HasPrefix(strings.Join(strings.Fields(body), ""), `{"host":"some.host.com","backend":"localhost:3000",`) {
		t.Errorf("create answered %s", body)
	}
	code, hdr, body = f.do(t, "POST", "/entries.json", entryJSON("SOME.host.com", "localhost:3001"))
	if code != 200 || hdr.Get("Location") != "" || !strings.Contains(body, `"localhost:3001"`) {
		t.Fatalf("replace: %d, Location %q, %s; want 200", code, hdr.Get("Location"), body)
	}
	if f.table.Len() != 1 {
		t.Errorf("%d overrides, want 1", f.table.Len())
	}
}

func TestEntriesBadBodies(t *testing.T) {
	f := newFixture(t, "")
	if _, err := f.table.Set("keep.example.com", "10.0.0.1:80"); err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("a", MaxBody)
	tests := []struct {
		name, body string
		code       int
		errPart    string
	}{
		{"empty body", ``, 400, "empty"},
		{"whitespace body", "  \n", 400, "empty"},
		{"invalid JSON", `{"host":"a.com",`, 400, "invalid JSON"},
		{"not JSON", `host=a.com&backend=b:1`, 400, "invalid JSON"},
		{"unknown field", `{"host":"a.com","backend":"10.0.0.5:3000","ttl":5}`, 400, "unknown field"},
		{"wrong type", `{"host":1,"backend":"10.0.0.5:3000"}`, 400, "invalid JSON"},
		{"two values", `{"host":"a.com","backend":"10.0.0.5:3000"}{"host":"b.com","backend":"10.0.0.5:3000"}`, 400, "more than one"},
		{"a string", `"a.com"`, 400, "invalid JSON"},
		{"null", `null`, 400, "invalid JSON"},
		{"missing backend", `{"host":"a.com"}`, 400, "backend: "},
		{"empty list", `[]`, 400, "empty"},
		{"unknown field in a list", `[{"host":"a.com","backend":"10.0.0.5:3000"},{"host":"b.com","backend":"10.0.0.5:3000","x":1}]`, 400, "entry 1"},
		{"not an object in a list", `[{"host":"a.com","backend":"10.0.0.5:3000"},7]`, 400, "entry 1"},
		{"huge body", `{"host":"a.com","backend":"10.0.0.5:3000","pad":"` + pad + `"}`, 413, "over"},
		{"huge list", `[` + strings.Repeat(entryJSON("a.com", "10.0.0.5:3000")+",", MaxBody/40) + `{}]`, 413, "over"},
	}
	for _, tt := range tests {
		before := f.table.List()
		code, _, body := f.do(t, "POST", "/entries.json", tt.body)
		if code != tt.code {
			t.Errorf("%s: %d %.200s, want %d", tt.name, code, body, tt.code)
		}
		if msg := decodeError(t, tt.name, body); !strings.Contains(msg, tt.errPart) {
			t.Errorf("%s: error %q, want it to contain %q", tt.name, msg, tt.errPart)
		}
		f.unchanged(t, tt.name, before)
	}
	if f.table.Len() != 1 {
		t.Errorf("%d overrides after bad bodies, want the 1 set before", f.table.Len())
	}
}

func TestEntriesBulkImport(t *testing.T) {
	f := newFixture(t, "")
	if _, err := f.table.Set("keep.example.com", "10.0.0.1:80"); err != nil {
		t.Fatal(err)
	}
	before := f.table.List()
	body := `[` + entryJSON("a.example.com", "10.0.0.5:3000") + `,` + entryJSON("b.example.com", "10.0.0.5:3000") + `,` + entryJSON("c.example.com", "10.0.0.5:0") + `]`
	code, _, resp := f.do(t, "POST", "/entries.json", body)
	if msg := decodeError(t, "bulk with a bad entry", resp); code != 400 || !strings.Contains(msg, "entry 2") || !strings.Contains(msg, "backend") {
		t.Errorf("bulk with a bad entry 2: %d %q, want 400 naming entry 2 and its backend", code, msg)
	}
	f.unchanged(t, "a bulk import with a bad entry", before)

	var pairs []hostmap.Pair
	for i := range 500 {
		pairs = append(pairs, hostmap.Pair{Host: fmt.Sprintf("H%d.Example.com", i), Backend: fmt.Sprintf("10.0.%d.%d:80", i/256, i%256)})
	}
	pairs = append(pairs, hostmap.Pair{Host: "keep.example.com", Backend: "10.0.0.2:80"})
	raw, _ := json.Marshal(pairs)
	code, _, resp = f.do(t, "POST", "/entries.json", string(raw))
	var out []Override
	if code != 200 || json.Unmarshal([]byte(resp), &out) != nil || len(out) != len(pairs) {
		t.Fatalf("bulk import of %d: %d %.300s", len(pairs), code, resp)
	}
	if out[7].Host != "h7.example.com" || out[7].Backend != "10.0.0.7:80" {
		t.Errorf("bulk answer[7] = %+v", out[7])
	}
	if n := f.table.Len(); n != 501 {
		t.Errorf("%d overrides after the import, want 501", n)
	}
	if e, _ := f.table.Get("keep.example.com"); e.Backend != "10.0.0.2:80" {
		t.Errorf("an import did not replace an existing entry: %+v", e)
	}
	code, _, resp = f.do(t, "GET", "/entries.json", "")
	var list []Override
	if code != 200 || json.Unmarshal([]byte(resp), &list) != nil || len(list) != 501 || list[0].Host != "h0.example.com" {
		t.Errorf("GET /entries.json after the import: %d, %d entries", code, len(list))
	}
}

func TestEntriesGetAndDelete(t *testing.T) {
	f := newFixture(t, "")
	code, _, body := f.do(t, "GET", "/entries.json", "")
	if code != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("empty list: %d %q, want 200 []", code, body)
	}
	for _, p := range []hostmap.Pair{{Host: "*.example.com", Backend: "10.0.0.1:80"}, {Host: "some.host.com", Backend: "localhost:3000"}} {
		if _, err := f.table.Set(p.Host, p.Backend); err != nil {
			t.Fatal(err)
		}
	}
	get := []struct {
		path    string
		code    int
		backend string
	}{
		{"/entries/%2A.example.com.json", 200, "10.0.0.1:80"},
		{"/entries/*.example.com.json", 200, "10.0.0.1:80"},
		{"/entries/some.host.com.json", 200, "localhost:3000"},
		{"/entries/Some.Host.COM.json", 200, "localhost:3000"},
		{"/entries/some%2Ehost%2Ecom.json", 200, "localhost:3000"},
		{"/entries/www.example.com.json", 404, ""}, // the wildcard matches lookups, not this route
		{"/entries/other.com.json", 404, ""},
		{"/entries/some.host.com", 404, ""},
		{"/entries/some.host.com.xml", 404, ""},
		{"/entries/", 404, ""},
		{"/entries/a/b.json", 404, ""},
		{"/entries/..%2F..%2Fetc%2Fpasswd.json", 400, ""},
		{"/entries/..%2F..%2Fetc%2Fpasswd", 404, ""},
		{"/entries/../../etc/passwd.json", 400, ""},
		{"/entries/./some.host.com.json", 400, ""},
		{"/entries//some.host.com.json", 400, ""},
		{"/entries/.json", 400, ""},
		{"/entries/..json", 400, ""},
		{"/entries/a%00b.json", 400, ""},
		{"/entries/a%20b.json", 400, ""},
		{"/entries/b%C3%BCcher.example.json", 400, ""},
	}
	for _, tt := range get {
		code, hdr, body := f.do(t, "GET", tt.path, "")
		if code != tt.code || hdr.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s: %d (%s) %s, want %d", tt.path, code, hdr.Get("Content-Type"), body, tt.code)
			continue
		}
		if code != 200 {
			decodeError(t, "GET "+tt.path, body)
			continue
		}
		var o Override
		if json.Unmarshal([]byte(body), &o) != nil || o.Backend != tt.backend {
			t.Errorf("GET %s: %s, want backend %s", tt.path, body, tt.backend)
		}
	}

	before := f.table.List()
	for _, tt := range get {
		if tt.code == 200 {
			continue
		}
		code, _, body := f.do(t, "DELETE", tt.path, "")
		if code < 400 || code > 499 {
			t.Errorf("DELETE %s: %d %s, want 4xx", tt.path, code, body)
		}
		f.unchanged(t, "DELETE "+tt.path, before)
	}

	code, _, body = f.do(t, "DELETE", "/entries/%2A.example.com.json", "")
	var o Override
	if code != 200 || json.Unmarshal([]byte(body), &o) != nil || o.Host != "*.example.com" || o.Backend != "10.0.0.1:80" {
		t.Errorf("DELETE *.example.com: %d %s, want 200 with the removed entry", code, body)
	}
	if _, ok := f.table.Get("*.example.com"); ok {
		t.Error("DELETE answered 200 but the entry is still there")
	}
	for _, method := range []string{"DELETE", "GET"} {
		code, _, body = f.do(t, method, "/entries/%2A.example.com.json", "")
		if code != 404 || !strings.Contains(decodeError(t, method, body), "*.example.com") {
			t.Errorf("%s after the delete: %d %s, want 404 naming the host", method, code, body)
		}
	}
	if f.table.Len() != 1 {
		t.Errorf("%d overrides left, want 1", f.table.Len())
	}
	code, hdr, _ := f.do(t, "PUT", "/entries.json", entryJSON("a.com", "b:1"))
	if code != 405 || hdr.Get("Allow") == "" {
		t.Errorf("PUT /entries.json: %d, Allow %q; want 405 with Allow", code, hdr.Get("Allow"))
	}
}

func TestEntriesToken(t *testing.T) {
	f := newFixture(t, "s3cret")
	if _, err := f.table.Set("keep.example.com", "10.0.0.1:80"); err != nil {
		t.Fatal(err)
	}
	before := f.table.List()
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/entries.json", entryJSON("new.example.com", "10.0.0.5:3000")},
		{"POST", "/entries.json", `[` + entryJSON("new.example.com", "10.0.0.5:3000") + `]`},
		{"POST", "/entries.json", entryJSON("keep.example.com", "10.0.0.5:3000")},
		{"DELETE", "/entries/keep.example.com.json", ""},
	} {
		for _, auth := range []string{"", "Bearer wrong", "s3cret"} {
			code, _, body := f.do(t, tc.method, tc.path, tc.body, "Authorization", auth)
			if code != 401 || !strings.Contains(body, "token") {
				t.Errorf("%s %s with Authorization %q: %d %s, want 401", tc.method, tc.path, auth, code, body)
			}
		}
	}
	f.unchanged(t, "requests without the token", before)
	for _, path := range []string{"/entries.json", "/entries/keep.example.com.json"} {
		if code, _, body := f.do(t, "GET", path, ""); code != 200 {
			t.Errorf("GET %s without a token: %d %s, want 200", path, code, body)
		}
	}
	if code, _, body := f.do(t, "POST", "/entries.json", entryJSON("new.example.com", "10.0.0.5:3000"), "Authorization", "Bearer s3cret"); code != 201 {
		t.Errorf("POST with the token: %d %s", code, body)
	}
	if code, _, body := f.do(t, "DELETE", "/entries/keep.example.com.json", "", "Authorization", "Bearer s3cret"); code != 200 {
		t.Errorf("DELETE with the token: %d %s", code, body)
	}
}

// An override answers /v1/lookup for its host (source "override"), a
// wildcard for its subdomains, and the ring answers again once it is gone.
func TestEntriesLookupOrder(t *testing.T) {
	f := newFixture(t, "")
	lookup := func(key string) Lookup {
		t.Helper()
		code, _, body := f.do(t, "GET", "/v1/lookup?key="+url.QueryEscape(key)+"&n=3", "")
		var l Lookup
		if code != 200 || json.Unmarshal([]byte(body), &l) != nil {
			t.Fatalf("lookup %s: %d %s", key, code, body)
		}
		return l
	}
	const key = "Some.Host.com:8080/x/y"
	ring := lookup(key)
	if ring.Source != "ring" {
		t.Fatalf("before any override: %+v", ring)
	}
	for _, body := range []string{entryJSON("*.host.com", "10.9.9.9:80"), entryJSON("some.host.com", "localhost:3000")} {
		if code, _, resp := f.do(t, "POST", "/entries.json", body); code != 201 {
			t.Fatalf("POST %s: %d %s", body, code, resp)
		}
	}
	for _, tt := range []struct{ key, backend, source string }{
		{key, "localhost:3000", "override"},
		{"www.host.com/x", "10.9.9.9:80", "override"},
		{"a.b.host.com", "10.9.9.9:80", "override"},
		{"host.com/x", ring.Backend, ""},
		{"/some.host.com/x", "", "ring"},
	} {
		l := lookup(tt.key)
		if tt.source == "override" && (l.Source != "override" || l.Backend != tt.backend || len(l.Candidates) != 1 || l.Candidates[0] != tt.backend) {
			t.Errorf("lookup %s = %+v, want override %s", tt.key, l, tt.backend)
		}
		if tt.source != "override" && l.Source != "ring" {
			t.Errorf("lookup %s = %+v, want the ring", tt.key, l)
		}
	}
	if code, _, resp := f.do(t, "DELETE", "/entries/some.host.com.json", ""); code != 200 {
		t.Fatalf("DELETE: %d %s", code, resp)
	}
	if l := lookup(key); l.Source != "override" || l.Backend != "10.9.9.9:80" {
		t.Errorf("after deleting the exact host, lookup = %+v; want the wildcard", l)
	}
	if code, _, resp := f.do(t, "DELETE", "/entries/%2A.host.com.json", ""); code != 200 {
		t.Fatalf("DELETE wildcard: %d %s", code, resp)
	}
	if l := lookup(key); l.Source != "ring" || l.Backend != ring.Backend {
		t.Errorf("after deleting both, lookup = %+v; want the ring owner %s again", l, ring.Backend)
	}
}

func TestEntriesWithoutTable(t *testing.T) {
	f := newFixture(t, "")
	srv := httptest.NewServer(New(Config{Router: f.router, Cluster: f.node}))
	t.Cleanup(srv.Close)
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/entries.json", ""},
		{"POST", "/entries.json", entryJSON("a.com", "10.0.0.5:3000")},
		{"GET", "/entries/a.com.json", ""},
		{"DELETE", "/entries/a.com.json", ""},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e Error
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != 503 || !strings.Contains(e.Error, "overrides are not available") {
			t.Errorf("%s %s without a table: %d %q, want 503", tc.method, tc.path, resp.StatusCode, e.Error)
		}
	}
}

func TestClientHosts(t *testing.T) {
	f := newFixture(t, "tok")
	ctx := context.Background()
	c, err := NewClient(strings.TrimPrefix(f.srv.URL, "http://"), "tok")
	if err != nil {
		t.Fatal(err)
	}
	if hs, err := c.Hosts(ctx); err != nil || len(hs) != 0 || hs == nil {
		t.Fatalf("Hosts on an empty table = %#v, %v; want an empty list", hs, err)
	}
	o, err := c.SetHost(ctx, "*.Example.com", "10.0.0.5:3000")
	if err != nil || o.Host != "*.example.com" || o.Backend != "10.0.0.5:3000" || o.Node != "api-test" {
		t.Fatalf("SetHost = %+v, %v", o, err)
	}
	if _, err := c.SetHost(ctx, "a..b", "10.0.0.5:3000"); err == nil || !strings.HasPrefix(err.Error(), "host: ") {
		t.Errorf("SetHost of a bad host: %v", err)
	}
	if got, err := c.Host(ctx, "*.example.com"); err != nil || got != o {
		t.Errorf("Host = %+v, %v; want %+v", got, err, o)
	}
	hs, err := c.Hosts(ctx)
	if err != nil || len(hs) != 1 || hs[0] != o {
		t.Errorf("Hosts = %+v, %v", hs, err)
	}
	if got, err := c.DeleteHost(ctx, "*.example.com"); err != nil || got.Host != o.Host || got.Backend != o.Backend {
		t.Errorf("DeleteHost = %+v, %v", got, err)
	}
	if _, err := c.DeleteHost(ctx, "*.example.com"); !IsNotFound(err) {
		t.Errorf("DeleteHost again: %v, want not found", err)
	}
	bad, _ := NewClient(strings.TrimPrefix(f.srv.URL, "http://"), "")
	if _, err := bad.SetHost(ctx, "a.com", "10.0.0.5:3000"); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("SetHost without a token: %v", err)
	}
}
