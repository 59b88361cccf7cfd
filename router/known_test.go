package router_test

import (
	"strconv"
	"testing"

	"ringman/router"
)

// Every protocol reads a count of candidates with ParseCandidates: 1 to
// MaxCandidates, digits only, nothing clamped.
func TestParseCandidates(t *testing.T) {
	if router.MaxCandidates != 8 || router.CandidatesRule != "a whole number from 1 to 8" {
		t.Fatalf("MaxCandidates %d, rule %q", router.MaxCandidates, router.CandidatesRule)
	}
	for _, tc := range []struct {
		in   string
		want int // 0: refused
	}{
		{"1", 1}, {"3", 3}, {"8", 8}, {"08", 8}, {"0001", 1},
		{"0", 0}, {"9", 0}, {"100", 0}, {"", 0}, {"-1", 0}, {"+3", 0}, {" 3", 0}, {"3 ", 0},
		{"1.0", 0}, {"x", 0}, {"99999999999999999999", 0}, {"000000001", 0},
	} {
		n, ok := router.ParseCandidates(tc.in)
		if ok != (tc.want != 0) || n != tc.want {
			t.Errorf("ParseCandidates(%q) = %d, %v; want %d", tc.in, n, ok, tc.want)
		}
		if nb, okb := router.ParseCandidates([]byte(tc.in)); nb != n || okb != ok {
			t.Errorf("ParseCandidates([]byte(%q)) = %d, %v; the string gives %d, %v", tc.in, nb, okb, n, ok)
		}
	}
	for n := -1; n <= 10; n++ {
		if got, want := router.ValidCandidates(n), n >= 1 && n <= 8; got != want {
			t.Errorf("ValidCandidates(%d) = %v", n, got)
		}
	}
}

// Known: the default service, services given to Know, and every service
// that was in an Update, even after its last instance went.
func TestKnown(t *testing.T) {
	r := newRouter(t)
	for _, s := range []string{"", "web"} {
		if !r.Known(s) {
			t.Errorf("Known(%q) = false before any Update, want true (the default service)", s)
		}
	}
	if r.Known("thumbs") {
		t.Error("Known(thumbs) before anything named it")
	}
	r.Know("mapped")
	update(t, r, map[string][]string{"thumbs": {"10.0.1.1:80"}}, "thumbs")
	update(t, r, map[string][]string{"web": {"10.0.0.1:80"}}, "thumbs", "web")
	for _, s := range []string{"web", "mapped", "thumbs"} {
		if !r.Known(s) {
			t.Errorf("Known(%q) = false", s)
		}
	}
	if r.Ring("thumbs") != nil {
		t.Error("thumbs still has a ring")
	}
	for _, s := range []string{"nosuch", "Web", "thumbs "} {
		if r.Known(s) {
			t.Errorf("Known(%q) = true", s)
		}
	}
	key := []byte("nosuch")
	if allocs := testing.AllocsPerRun(1000, func() {
		if r.Known(string(key)) || !r.Known("web") {
			t.Fatal("Known changed")
		}
	}); allocs != 0 {
		t.Errorf("Known allocates %.1f times per call, want 0", allocs)
	}
}

// Known is safe while Update and Know publish new sets (-race checks it),
// and what was known stays known.
func TestKnownConcurrent(t *testing.T) {
	r := newRouter(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			if _, err := r.Update(map[string][]string{"s" + strconv.Itoa(i): {"10.0.0.1:80"}}); err != nil {
				t.Error(err)
				return
			}
			r.Know("k" + strconv.Itoa(i))
		}
	}()
	seen := 0 // services s0..s{seen-1} were known once
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		for seen < 200 && r.Known("s"+strconv.Itoa(seen)) {
			seen++
		}
		for i := range seen {
			if !r.Known("s" + strconv.Itoa(i)) {
				t.Fatalf("s%d went unknown", i)
			}
		}
	}
	if !r.Known("k199") || !r.Known("s199") || !r.Known("web") {
		t.Error("a service is not known after the updates")
	}
}
