package discovery

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseInstance(t *testing.T) {
	for _, tc := range []struct {
		in, canon string
		want      Instance
	}{
		{"10.0.0.5:8080", "10.0.0.5:8080", Instance{Addr: "10.0.0.5:8080", Weight: 1}},
		{"10.0.0.5:8080,id=web-a", "10.0.0.5:8080,id=web-a", Instance{Addr: "10.0.0.5:8080", ID: "web-a", Weight: 1}},
		{"10.0.0.5:8080,weight=2,id=web-a", "10.0.0.5:8080,id=web-a,weight=2", Instance{Addr: "10.0.0.5:8080", ID: "web-a", Weight: 2}},
		{"10.0.0.5:8080,weight=1", "10.0.0.5:8080", Instance{Addr: "10.0.0.5:8080", Weight: 1}},
		{"10.0.0.5:8080,weight=0", "10.0.0.5:8080,weight=0", Instance{Addr: "10.0.0.5:8080", Weight: 0}},
		{"10.0.0.5:8080,id=10.0.0.5:8080", "10.0.0.5:8080", Instance{Addr: "10.0.0.5:8080", Weight: 1}},
		{"[::1]:80,id=v6", "[::1]:80,id=v6", Instance{Addr: "[::1]:80", ID: "v6", Weight: 1}},
		{"10.0.0.5:8080,ramp=3/10,weight=2", "10.0.0.5:8080,weight=2,ramp=3/10", Instance{Addr: "10.0.0.5:8080", Weight: 2, Step: 3, Steps: 10}},
	} {
		got, err := ParseInstance(tc.in)
		if err != nil || got != tc.want || got.String() != tc.canon {
			t.Errorf("ParseInstance(%q) = %+v (%q), %v; want %+v (%q)", tc.in, got, got.String(), err, tc.want, tc.canon)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"10.0.0.5", "want host:port"},
		{"10.0.0.5:8080,", `attribute ""`},
		{"10.0.0.5:8080,id", `attribute "id"`},
		{"10.0.0.5:8080,id=a,id=b", `attribute "id=b"`},
		{"10.0.0.5:8080,id=", "empty id"},
		{"10.0.0.5:8080,id=a b", `character ' '`},
		{"10.0.0.5:8080,id=" + strings.Repeat("x", 129), "over 128 bytes"},
		{"10.0.0.5:8080,weight=101", "want 0 to 100"},
		{"10.0.0.5:8080,weight=-1", "want 0 to 100"},
		{"10.0.0.5:8080,weight=1.5", "want 0 to 100"},
		{"10.0.0.5:8080,zone=a", `unknown attribute "zone"`},
		{"10.0.0.5:8080,ramp=0/10", "want K/N with 1 <= K < N <= 100"},
		{"10.0.0.5:8080,ramp=10/10", "want K/N"},
		{"10.0.0.5:8080,ramp=3", "want K/N"},
	} {
		if got, err := ParseInstance(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseInstance(%q) = %+v, %v; want an error with %q", tc.in, got, err, tc.want)
		}
	}
}

// Another node's instances must be canonical, so that every node dedups
// and compares them alike.
func TestDecodeMetaRefusesNonCanonicalInstances(t *testing.T) {
	for _, inst := range []string{"10.0.0.5:8080,weight=1", "10.0.0.5:8080,weight=2,id=a", "10.0.0.5:8080,zone=x"} {
		b := meta{Services: map[string][]string{"web": {inst}}}.encode()
		if _, err := decodeMeta(b); err == nil {
			t.Errorf("metadata with instance %q accepted", inst)
		}
	}
	m := meta{Services: map[string][]string{"web": {"10.0.0.5:8080,id=web-a,weight=2"}}}
	got, err := decodeMeta(m.encode())
	if err != nil || !slices.Equal(got.Services["web"], m.Services["web"]) {
		t.Errorf("canonical instance: %v, %v", got.Services, err)
	}
}

// TestSetWeight: a weight changed on the node that fronts the instance
// reaches every node's live set; another node's instance is refused.
func TestSetWeight(t *testing.T) {
	t.Parallel()
	a := startNode(t, "a", nil)
	b := startNode(t, "b", func(c *Config) {
		seeds(a)(c)
		c.Services = map[string][]string{"web": {"127.0.0.1:9002,id=web-b"}}
	})
	all := []*testNode{a, b}
	liveIs := func(want ...string) func() (bool, string) {
		return func() (bool, string) {
			for _, n := range all {
				if got := n.Live()["web"]; !slices.Equal(got, sortDedup(want)) {
					return false, fmt.Sprintf("%s sees web %v, want %v", n.Name(), got, want)
				}
			}
			return true, ""
		}
	}
	waitFor(t, 10*time.Second, liveIs(instanceOf("a"), "127.0.0.1:9002,id=web-b"))
	in, err := b.SetWeight("web", "127.0.0.1:9002", 3)
	if err != nil || in.String() != "127.0.0.1:9002,id=web-b,weight=3" {
		t.Fatalf("SetWeight = %v, %v", in, err)
	}
	waitFor(t, 10*time.Second, liveIs(instanceOf("a"), "127.0.0.1:9002,id=web-b,weight=3"))
	if _, err := b.SetWeight("web", instanceOf("a"), 2); !errors.Is(err, ErrNotLocal) || !strings.Contains(err.Error(), "web=127.0.0.1:9002,id=web-b,weight=3") {
		t.Errorf("SetWeight of another node's instance: %v", err)
	}
	if _, err := b.SetWeight("web", "127.0.0.1:9002", 101); !errors.Is(err, ErrBadWeight) {
		t.Errorf("SetWeight 101: %v", err)
	}
}
