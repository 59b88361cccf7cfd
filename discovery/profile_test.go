package discovery

import (
	"fmt"
	"slices"
	"testing"
)

// TestProfilesAreWhatRuns: the exported timings are read from the
// memberlist configuration a node starts with, for every profile.
func TestProfilesAreWhatRuns(t *testing.T) {
	if got := ProfileNames(); !slices.Equal(got, []string{"lan", "wan", "fast"}) {
		t.Fatalf("ProfileNames() = %q", got)
	}
	if got, want := ProfileChoices(), "lan, wan or fast"; got != want {
		t.Errorf("ProfileChoices() = %q, want %q", got, want)
	}
	for _, name := range append(ProfileNames(), "") {
		p, err := LookupProfile(name)
		if err != nil {
			t.Fatalf("LookupProfile(%q): %v", name, err)
		}
		c, err := memberlistConfig(name)
		if err != nil {
			t.Fatal(err)
		}
		if p.ProbeInterval != c.ProbeInterval || p.ProbeTimeout != c.ProbeTimeout || p.SuspicionMult != c.SuspicionMult ||
			p.GossipInterval != c.GossipInterval || p.PushPullInterval != c.PushPullInterval ||
			p.DeadNodeReclaimTime != c.DeadNodeReclaimTime || p.GossipToTheDeadTime != c.GossipToTheDeadTime ||
			p.AwarenessMaxMultiplier != c.AwarenessMaxMultiplier || p.IndirectChecks != c.IndirectChecks {
			t.Errorf("profile %q: exported %+v, memberlist runs %+v", name, p, *c)
		}
	}
	if p, _ := LookupProfile(""); p.Name != "lan" {
		t.Errorf(`LookupProfile("") = %q, want lan`, p.Name)
	}
	lan, _ := LookupProfile("lan")
	fast, _ := LookupProfile("fast")
	if fast.ProbeInterval >= lan.ProbeInterval || fast.Summary == "" {
		t.Errorf("fast profile %+v: want a shorter probe interval than lan's, and a summary", fast)
	}
	for _, bad := range []string{"quick", "LAN", "local"} {
		_, err := LookupProfile(bad)
		_, mlErr := memberlistConfig(bad)
		want := `unknown gossip profile "` + bad + `" (want lan, wan or fast)`
		if err == nil || err.Error() != want || mlErr == nil || mlErr.Error() != want {
			t.Errorf("profile %q: %v / %v, want %q", bad, err, mlErr, want)
		}
	}
}

// A cluster that outgrows what its profile was measured to hold is told so
// once per node, not once per change.
func TestProfileSizeWarningOnce(t *testing.T) {
	t.Parallel()
	tun := testTunables()
	tun.maxNodes = 2
	a := startNodeTun(t, "a", tun, nil)
	b := startNodeTun(t, "b", tun, seeds(a))
	c := startNodeTun(t, "c", tun, seeds(a))
	all := []*testNode{a, b, c}
	// Published changes are logged; a burst is published after a quiet spell.
	logged := func(parts ...string) func() (bool, string) {
		return func() (bool, string) {
			for _, n := range all {
				if len(n.logs.lines(parts...)) == 0 {
					return false, fmt.Sprintf("%s has not logged %q", n.Name(), parts)
				}
			}
			return true, ""
		}
	}
	waitFor(t, convergeWithin, logged("larger than this gossip profile", "members=3", "measured_up_to=2"))
	// One more change after the cluster outgrew the bound.
	startNodeTun(t, "d", tun, seeds(a))
	waitFor(t, convergeWithin, logged("node joined", "node=d"))
	for _, n := range all {
		if got := n.logs.lines("larger than this gossip profile"); len(got) != 1 {
			t.Errorf("%s logged the size warning %d times, want once: %q", n.Name(), len(got), got)
		}
	}
}

func TestFastProfileSaysItsSize(t *testing.T) {
	p, err := LookupProfile("fast")
	if err != nil {
		t.Fatal(err)
	}
	if p.MaxNodes != 50 {
		t.Errorf("fast's MaxNodes = %d, want 50 (what make scale measured it to hold)", p.MaxNodes)
	}
	if lan, _ := LookupProfile("lan"); lan.MaxNodes != 0 {
		t.Errorf("lan's MaxNodes = %d, want 0 (no size seen to fail)", lan.MaxNodes)
	}
}
