package discovery

import (
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
