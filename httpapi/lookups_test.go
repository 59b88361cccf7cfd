package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"ringman/router"
)

// /v1/lookup and /v1/route count each lookup by where its answer came from
// and each request they refuse; other routes count nothing.
func TestLookupCounters(t *testing.T) {
	f := newFixture(t, "")
	counters := &LookupCounters{}
	f.srv = httptest.NewServer(New(Config{Router: f.router, Cluster: f.node, Overrides: f.table, Lookups: counters}))
	t.Cleanup(f.srv.Close)
	if _, err := f.table.Set("pinned.example.com", "10.9.9.9:1"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path   string
		header []string
		status int
	}{
		{"/v1/lookup?key=/a", nil, http.StatusOK},                                               // ring
		{"/v1/lookup?key=/a&n=3", nil, http.StatusOK},                                           // ring
		{"/v1/lookup?key=pinned.example.com/a", nil, http.StatusOK},                             // override
		{"/v1/lookup?key=/a&service=thumbs", nil, http.StatusNotFound},                          // miss
		{"/v1/lookup?key=/a&service=nosuch", nil, http.StatusNotFound},                          // error: unknown service
		{"/v1/lookup", nil, http.StatusBadRequest},                                              // error: no key
		{"/v1/lookup?key=/a&n=0", nil, http.StatusBadRequest},                                   // error: bad n
		{"/v1/route", []string{HeaderKey, "/a"}, http.StatusOK},                                 // ring
		{"/v1/route", []string{HeaderKey, "pinned.example.com/b"}, http.StatusOK},               // override
		{"/v1/route", []string{HeaderKey, "/a", HeaderService, "thumbs"}, http.StatusForbidden}, // miss
		{"/v1/route", []string{HeaderKey, "/a", HeaderService, "nosuch"}, http.StatusForbidden}, // error: unknown service
		{"/v1/route", nil, http.StatusBadRequest},                                               // error: no key
		{"/v1/route?n=x", []string{HeaderKey, "/a"}, http.StatusBadRequest},                     // error: bad n
		{"/v1/rings", nil, http.StatusOK},
		{"/entries.json", nil, http.StatusOK},
	} {
		if status, _, body := f.do(t, "GET", tc.path, "", tc.header...); status != tc.status {
			t.Fatalf("GET %s %q: %d %s, want %d", tc.path, tc.header, status, body, tc.status)
		}
	}
	want := LookupStats{Lookups: [3]uint64{router.Miss: 2, router.Ring: 3, router.Override: 2}, Errors: 6}
	if got := counters.Stats(); got != want {
		t.Errorf("counted %+v, want %+v", got, want)
	}
}
