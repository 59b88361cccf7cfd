package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// GET /v1/route answers nginx's auth_request: the backend in headers, 403
// when there is no route, the same answers as /v1/lookup.
func TestRoute(t *testing.T) {
	f := newFixture(t, "")
	if _, err := f.table.Set("pinned.example.com", "10.9.9.9:3000"); err != nil {
		t.Fatal(err)
	}
	owner, _ := f.router.Lookup("web", []byte("shop.example.com/a/b"))
	three, _ := f.router.Candidates("web", []byte("shop.example.com/a/b"), 3)
	tests := []struct {
		name       string
		method     string
		query      string
		header     []string
		code       int
		backend    string
		source     string
		candidates string
		errPart    string
	}{
		{"ring owner", "GET", "", []string{HeaderKey, "shop.example.com/a/b"}, 200, owner, "ring", owner, ""},
		{"three candidates", "GET", "?n=3", []string{HeaderKey, "shop.example.com/a/b"}, 200, owner, "ring", strings.Join(three, ","), ""},
		{"named service", "GET", "", []string{HeaderKey, "shop.example.com/a/b", HeaderService, "web"}, 200, owner, "ring", owner, ""},
		{"override", "GET", "?n=3", []string{HeaderKey, "Pinned.Example.com:8080/x"}, 200, "10.9.9.9:3000", "override", "10.9.9.9:3000", ""},
		{"HEAD", "HEAD", "", []string{HeaderKey, "shop.example.com/a/b"}, 200, owner, "ring", owner, ""},
		{"no route", "GET", "", []string{HeaderKey, "/a", HeaderService, "thumbs"}, 403, "", "", "", `service "thumbs" has no live instance`},
		{"unknown service", "GET", "", []string{HeaderKey, "/a", HeaderService, "nosuch"}, 403, "", "", "", `unknown service "nosuch"`},
		{"no key", "GET", "", nil, 400, "", "", "", "X-Ringman-Key is required"},
		{"key in query only", "GET", "?key=/a", nil, 400, "", "", "", "X-Ringman-Key is required"},
		{"bad n", "GET", "?n=9", []string{HeaderKey, "/a"}, 400, "", "", "", "n must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, hdr, body := f.do(t, tt.method, "/v1/route"+tt.query, "", tt.header...)
			if code != tt.code {
				t.Fatalf("status %d, want %d (%s)", code, tt.code, body)
			}
			if got := hdr.Get(HeaderBackend); got != tt.backend {
				t.Errorf("%s = %q, want %q", HeaderBackend, got, tt.backend)
			}
			if got := hdr.Get(HeaderSource); got != tt.source {
				t.Errorf("%s = %q, want %q", HeaderSource, got, tt.source)
			}
			if got := hdr.Get(HeaderCandidates); got != tt.candidates {
				t.Errorf("%s = %q, want %q", HeaderCandidates, got, tt.candidates)
			}
			if tt.method == "HEAD" {
				return
			}
			if tt.code != 200 {
				var e Error
				if err := json.Unmarshal([]byte(body), &e); err != nil || !strings.Contains(e.Error, tt.errPart) {
					t.Errorf("error body %q, want it to contain %q", body, tt.errPart)
				}
				return
			}
			var l Lookup
			if err := json.Unmarshal([]byte(body), &l); err != nil {
				t.Fatal(err)
			}
			if l.Backend != tt.backend || l.Source != tt.source || strings.Join(l.Candidates, ",") != tt.candidates {
				t.Errorf("body %+v does not match the headers", l)
			}
		})
	}
}

func TestRouteMethodsAndIndex(t *testing.T) {
	f := newFixture(t, "")
	code, hdr, _ := f.do(t, "POST", "/v1/route", "", HeaderKey, "/a")
	if code != http.StatusMethodNotAllowed || !strings.Contains(hdr.Get("Allow"), "GET") {
		t.Errorf("POST /v1/route = %d (Allow %q), want 405 allowing GET", code, hdr.Get("Allow"))
	}
	_, _, body := f.do(t, "GET", "/", "")
	if !strings.Contains(body, "GET /v1/route") || !strings.Contains(body, HeaderKey) {
		t.Errorf("GET / does not document /v1/route:\n%s", body)
	}
}
