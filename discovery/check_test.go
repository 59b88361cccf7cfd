package discovery

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestCheckHysteresis: with rise 2 and fall 3, the verdict changes only
// after that many probes in a row agree.
func TestCheckHysteresis(t *testing.T) {
	h := newHealthCheck(Check{URL: "http://127.0.0.1:1/", Rise: 2, Fall: 3})
	defer h.close()
	down := errors.New("GET: 503")
	now := time.Unix(1000, 0)
	if !h.first(nil, now) {
		t.Fatal("a passing first probe did not pass the check")
	}
	steps := []struct {
		err     error
		passing bool
	}{
		{down, true}, {nil, true}, {down, true}, {down, true}, {nil, true}, // never 3 failures in a row
		{down, true}, {down, true}, {down, false}, // the third fails the check
		{down, false}, {nil, false}, {down, false}, {nil, false}, // never 2 passes in a row
		{nil, true}, // the second passes it
	}
	for i, s := range steps {
		now = now.Add(time.Second)
		passing, changed := h.record(s.err, now)
		if passing != s.passing {
			t.Fatalf("probe %d (err %v): passing %v, want %v (state %+v)", i+1, s.err, passing, s.passing, h.snapshot())
		}
		if want := i > 0 && steps[i-1].passing != s.passing; changed != want {
			t.Errorf("probe %d: changed %v, want %v", i+1, changed, want)
		}
	}
	st := h.snapshot()
	if st.Passes != 2 || st.Failures != 0 || st.LastError != down.Error() || !st.Since.Equal(now) || !st.Checked.Equal(now) {
		t.Errorf("state after the last pass: %+v", st)
	}
}

// TestCheckFlakyBackendNeverDrains: a backend failing one probe in three
// stays in the rings however long it flaps, and one down for three probes
// in a row is drained, then undrained after two good ones.
func TestCheckFlakyBackendNeverDrains(t *testing.T) {
	t.Parallel()
	var polls, down atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := polls.Add(1)
		if down.Load() == 1 || n%3 == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()

	a := startNode(t, "a", nil)
	b := startNode(t, "b", func(c *Config) {
		seeds(a)(c)
		c.Check = Check{URL: srv.URL + "/health", Interval: 10 * time.Millisecond}
	})
	all := []*testNode{a, b}
	waitFor(t, 10*time.Second, webIs(all, "a", "b"))
	waitFor(t, 10*time.Second, func() (bool, string) {
		return polls.Load() >= 30, fmt.Sprintf("%d probes, want 30", polls.Load())
	})
	if n := len(b.logs.lines("health check failing")); n != 0 || b.Draining() {
		t.Fatalf("a backend failing 1 probe in 3 drained the node (%d lines, Draining %v)", n, b.Draining())
	}
	st, ok := b.CheckState()
	if !ok || !st.Passing || !strings.Contains(st.LastError, "503 Service Unavailable (want 200-399)") {
		t.Errorf("CheckState = %+v, %v; want passing with the last 503 as its last error", st, ok)
	}

	down.Store(1)
	waitFor(t, 10*time.Second, statusIs(all, "b", StatusDraining))
	waitFor(t, 10*time.Second, webIs(all, "a"))
	if st, _ := b.CheckState(); st.Passing || st.Failures < 3 {
		t.Errorf("CheckState while drained = %+v; want failing after 3 or more failures", st)
	}
	down.Store(0) // back to failing 1 in 3: two passes in a row come soon
	waitFor(t, 10*time.Second, statusIs(all, "b", StatusAlive))
	waitFor(t, 10*time.Second, webIs(all, "a", "b"))
	if d, u := len(b.logs.lines("health check failing")), len(b.logs.lines("health check passing again")); d != 1 || u != 1 {
		t.Errorf("%d drain and %d undrain lines, want one each", d, u)
	}
}

// TestCheckStatusRange: a redirect is judged by its own status and not
// followed; StatusMin and StatusMax choose which statuses pass.
func TestCheckStatusRange(t *testing.T) {
	t.Parallel()
	var followed atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			followed.Add(1)
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	}))
	defer srv.Close()
	for _, tc := range []struct {
		lo, hi int
		pass   bool
	}{{0, 0, true}, {200, 299, false}, {302, 302, true}} {
		cfg, err := normalizeConfig(Config{Name: "x", Check: Check{URL: srv.URL, StatusMin: tc.lo, StatusMax: tc.hi}})
		if err != nil {
			t.Fatal(err)
		}
		h := newHealthCheck(cfg.Check)
		err = h.probe(t.Context())
		h.close()
		if (err == nil) != tc.pass {
			t.Errorf("statuses %d-%d: a 302 gave %v, want passing %v", cfg.Check.StatusMin, cfg.Check.StatusMax, err, tc.pass)
		}
	}
	if n := followed.Load(); n != 0 {
		t.Errorf("the check followed the redirect %d times", n)
	}
}
