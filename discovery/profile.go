package discovery

import (
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
)

// memberlistConfig returns memberlist's timings for a profile ("" is "lan").
//
// Every profile sets a short PushPullInterval: when many nodes join one seed
// at once, one node can stay unaware of another until the next full state
// sync, which memberlist's defaults schedule 30-90 s later (FINDINGS.md,
// "join stall"). Full syncs are also what repairs any other missed gossip.
// Never DefaultLocalConfig: it measured 38-44 s joins at 50 nodes and missed
// leave messages.
func memberlistConfig(profile string) (*memberlist.Config, error) {
	switch profile {
	case "", "lan":
		// Crash detection ~7 s, graceful leave < 1 s, ~0.1 KB/s per node.
		c := memberlist.DefaultLANConfig()
		c.PushPullInterval = 15 * time.Second    // default 30 s; bounds the join stall at ~15 s for little bandwidth
		c.DeadNodeReclaimTime = 10 * time.Second // a crashed node restarting on a new address is taken back after 10 s
		return c, nil
	case "wan":
		// Probe every 5 s with a 3 s timeout: detection takes tens of seconds.
		c := memberlist.DefaultWANConfig()
		c.PushPullInterval = 30 * time.Second // default 60 s; a full sync carries every member, so not as often as on a LAN
		c.DeadNodeReclaimTime = 30 * time.Second
		return c, nil
	case "fast":
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
		return c, nil
	default:
		return nil, fmt.Errorf("unknown gossip profile %q (want lan, wan or fast)", profile)
	}
}
