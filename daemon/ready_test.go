package daemon

import (
	"strings"
	"testing"

	"ringman/ring"
)

func TestReadinessReasons(t *testing.T) {
	r := &readiness{seeds: []string{"10.0.0.1:7946", "10.0.0.2:7946"}, knownPeers: 4}
	if got, want := r.notJoined(), "not joined yet: no answer from the seeds (--join 10.0.0.1:7946, 10.0.0.2:7946) or the 4 known peers; retrying in the background"; got != want {
		t.Errorf("notJoined = %q, want %q", got, want)
	}
	r = &readiness{knownPeers: 2}
	if got := r.notJoined(); !strings.Contains(got, "the 2 known peers saved in the data file") {
		t.Errorf("notJoined without seeds = %q", got)
	}
	r.stopping.Store(true)
	r.ready.Store(true)
	if ok, why := r.check(); ok || !strings.HasPrefix(why, "shutting down") {
		t.Errorf("check while stopping = %v, %q; want not ready, shutting down", ok, why)
	}

	build := func(insts ...string) *ring.Ring {
		b, err := ring.NewBuilder(ring.DefaultSettings())
		if err != nil {
			t.Fatal(err)
		}
		rg, err := b.Build(insts)
		if err != nil {
			t.Fatal(err)
		}
		return rg
	}
	two := build("10.0.0.1:1", "10.0.0.2:1")
	for _, tc := range []struct {
		rings map[string]*ring.Ring
		live  map[string][]string
		ok    bool
	}{
		{map[string]*ring.Ring{}, map[string][]string{}, true},
		{map[string]*ring.Ring{"web": two}, map[string][]string{"web": {"10.0.0.1:1", "10.0.0.2:1"}}, true},
		{map[string]*ring.Ring{"web": two}, map[string][]string{"web": {"10.0.0.1:1"}}, false},
		{map[string]*ring.Ring{}, map[string][]string{"web": {"10.0.0.1:1"}}, false},
		{map[string]*ring.Ring{"web": two}, map[string][]string{}, false},
		{map[string]*ring.Ring{"web": build()}, map[string][]string{}, true},
	} {
		if ok, why := ringsMatch(tc.rings, tc.live); ok != tc.ok {
			t.Errorf("ringsMatch(%v, %v) = %v (%s), want %v", tc.rings, tc.live, ok, why, tc.ok)
		}
	}
}
