package discovery

import (
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// Profile is a named set of gossip timings, as a node of that profile runs
// them: memberlist's preset with ringman's changes applied. It is read from
// the memberlist configuration the node is started with, so that whatever
// derives bounds from it (the fault suite's detection windows) cannot drift
// from what runs.
type Profile struct {
	Name string
	// Summary says what the name does not, for help texts; may be empty.
	Summary string

	ProbeInterval time.Duration // one member probed per interval
	ProbeTimeout  time.Duration // a direct probe's wait for its ack
	// IndirectChecks is how many members are asked to probe a member that
	// did not answer directly.
	IndirectChecks int
	// SuspicionMult scales how long a member stays suspect (in probe
	// intervals, times log10 of the member count) before it is declared dead.
	SuspicionMult int
	// AwarenessMaxMultiplier bounds how far Lifeguard stretches the probe
	// interval of a node that keeps missing acks.
	AwarenessMaxMultiplier int
	GossipInterval         time.Duration // one gossip round per interval
	GossipToTheDeadTime    time.Duration // a dead member is still gossiped to this long
	PushPullInterval       time.Duration // full state exchange with one random member
	// DeadNodeReclaimTime is how long after a member died its name may
	// come back on another address.
	DeadNodeReclaimTime time.Duration
	// MaxNodes is the largest cluster the profile was measured to hold on
	// a shared 2-core machine (`make scale`), 0 where no size was seen to
	// fail. A node warns once when its cluster grows past it.
	MaxNodes int
}

// profiles are the gossip profiles in the order help texts list them.
//
// Every profile sets a short PushPullInterval: when many nodes join one seed
// at once, one node can stay unaware of another until the next full state
// sync, which memberlist's defaults schedule 30-90 s later (FINDINGS.md,
// "join stall"). Full syncs are also what repairs any other missed gossip.
// Never DefaultLocalConfig: it measured 38-44 s joins at 50 nodes and missed
// leave messages.
//
// maxNodes is Profile.MaxNodes. fast holds 50 processes on 2 cores (join
// 0.2 s, crash detection 1.2 s, no false failure) but not 100: its 100 ms
// probe timeout fails under the CPU that 100 nodes' gossip takes, failures
// breed refutations and more gossip, and the cluster never converges (29,000
// false "node failed" lines in 2 minutes). lan holds 100 (join 1.6 s, crash
// detection 13 s, no false failure). memberlist fixes its probe timings when
// it starts, so a profile cannot stretch them as the cluster grows.
var profiles = []struct {
	name, summary string
	maxNodes      int
	config        func() *memberlist.Config
}{
	{"lan", "", 0, func() *memberlist.Config {
		// Crash detection ~7 s, graceful leave < 1 s, ~0.1 KB/s per node.
		c := memberlist.DefaultLANConfig()
		c.PushPullInterval = 15 * time.Second    // default 30 s; bounds the join stall at ~15 s for little bandwidth
		c.DeadNodeReclaimTime = 10 * time.Second // a crashed node restarting on a new address is taken back after 10 s
		return c
	}},
	{"wan", "", 0, func() *memberlist.Config {
		// Probe every 5 s with a 3 s timeout: detection takes tens of seconds.
		c := memberlist.DefaultWANConfig()
		c.PushPullInterval = 30 * time.Second // default 60 s; a full sync carries every member, so not as often as on a LAN
		c.DeadNodeReclaimTime = 30 * time.Second
		return c
	}},
	{"fast", "one datacenter up to 50 nodes, ~1 s failure detection", 50, func() *memberlist.Config {
		// LAN tuned for quick failover on a good network: crash detection
		// ~1 s, graceful leave ~0.1 s, at ~5x LAN's idle bandwidth and CPU.
		c := memberlist.DefaultLANConfig()
		c.ProbeInterval = 200 * time.Millisecond // default 1 s
		c.ProbeTimeout = 100 * time.Millisecond  // default 500 ms; loopback / same-rack RTT
		c.SuspicionMult = 2                      // default 4; suspect for 2 * log(N+1) probe intervals
		c.GossipInterval = 50 * time.Millisecond // default 200 ms
		c.PushPullInterval = 5 * time.Second     // measured to cap the 50-node join stall at ~13 s
		c.DeadNodeReclaimTime = 1 * time.Second  // restarts on a new address are accepted almost at once
		c.GossipToTheDeadTime = 5 * time.Second  // default 30 s; same as push/pull
		return c
	}},
}

// Profiles returns every gossip profile, in the order help texts list them.
func Profiles() []Profile {
	out := make([]Profile, len(profiles))
	for i, p := range profiles {
		c := p.config()
		out[i] = Profile{
			Name:                   p.name,
			Summary:                p.summary,
			ProbeInterval:          c.ProbeInterval,
			ProbeTimeout:           c.ProbeTimeout,
			IndirectChecks:         c.IndirectChecks,
			SuspicionMult:          c.SuspicionMult,
			AwarenessMaxMultiplier: c.AwarenessMaxMultiplier,
			GossipInterval:         c.GossipInterval,
			GossipToTheDeadTime:    c.GossipToTheDeadTime,
			PushPullInterval:       c.PushPullInterval,
			DeadNodeReclaimTime:    c.DeadNodeReclaimTime,
			MaxNodes:               p.maxNodes,
		}
	}
	return out
}

// ProfileNames returns the names Config.Profile takes ("" is "lan").
func ProfileNames() []string {
	names := make([]string, len(profiles))
	for i, p := range profiles {
		names[i] = p.name
	}
	return names
}

// ProfileChoices lists the profile names for a message: "lan, wan or fast".
func ProfileChoices() string {
	names := ProfileNames()
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// LookupProfile returns the profile called name ("" is "lan").
func LookupProfile(name string) (Profile, error) {
	if name == "" {
		name = "lan"
	}
	for _, p := range Profiles() {
		if p.Name == name {
			return p, nil
		}
	}
	return Profile{}, unknownProfile(name)
}

// memberlistConfig returns memberlist's timings for a profile ("" is "lan").
func memberlistConfig(name string) (*memberlist.Config, error) {
	if name == "" {
		name = "lan"
	}
	for _, p := range profiles {
		if p.name == name {
			return p.config(), nil
		}
	}
	return nil, unknownProfile(name)
}

func unknownProfile(name string) error {
	return fmt.Errorf("unknown gossip profile %q (want %s)", name, ProfileChoices())
}
