// Package discovery tells a ringman node who is alive and what they serve.
//
// It wraps hashicorp/memberlist (SWIM gossip): each node advertises the
// instances it fronts, a draining flag, its ring-settings fingerprint and its
// version in memberlist's node metadata; instances past its 512 bytes go as
// a digest, and the others fetch them from the node (services.go). Membership events are handed off
// (memberlist holds its own lock while calling delegates) to one goroutine
// that coalesces bursts and reports the live instances per service through
// Config.OnChange. The package knows nothing of rings: it reports sets.
//
// A node whose ring settings (Config.Fingerprint) differ from ours, whose
// metadata cannot be read or is over its bounds (memberlist bounds only what
// a node sends), or whose name is not a valid node name, is refused at join
// (memberlist's alive and merge delegates), so it never enters the member
// list: two nodes that would hash keys differently never share a ring, and
// no peer can take the rings over or forge log lines with its name.
//
// Besides membership, the cluster replicates one piece of application state
// (Config.SharedState: ringman's overrides), by broadcasts (Node.Broadcast)
// and by memberlist's full state exchange (push/pull) on every join and
// every PushPullInterval; see shared.go for the framing and size limits.
//
// Files, by concern (as hashicorp/serf lays out its own):
//   - node.go: Node, Start, Shutdown, Leave, Join, drain.
//   - events.go: memberlist's delegates, admission, the event loop.
//   - members.go: memberTable, this node's view of the members.
//   - config.go: Config, its defaults and validation, ParseHostPort.
//   - join.go: seeds, known peers and join addresses.
//   - reconnect.go: rejoining failed and restarted members, resyncs.
//   - broadcast.go: broadcaster, Broadcast's gossip and TCP queues.
//   - shared.go: message framing, the full state exchange.
//   - query.go: memberQuery, asking every member and collecting answers.
//   - keys.go: the gossip keyring, changed on every member by a query.
//   - meta.go: the metadata wire format and name checks.
//   - services.go: fetching the services that do not fit in the metadata.
//   - check.go, profile.go, logging.go: the health check, gossip timings,
//     memberlist's log lines into slog.
//
// Locks. Node.opMu orders the changes to this node's memberlist state
// (metadata updates, Leave, Shutdown) and is held while memberlist sends
// them; memberlist then calls the delegates with its own lock held, and
// they take memberTable.mu (the member view) or Node.metaMu (this node's
// metadata). So the order is opMu, then memberlist's locks, then either of
// those two, which are leaves: nothing is locked, waited for or called out
// to under them. The other locks take none of this package's under them:
// keyState.mu (a keyring change and its save), memberQuery.mu (queries in
// flight) and oversizedQueue.mu (large broadcasts waiting).
package discovery

// SharedState is application state the cluster replicates besides
// membership (ringman's overrides). Merges must be commutative, associative
// and idempotent (last writer wins, say): broadcasts arrive in any order,
// more than once, or not at all, and full states repair what they miss.
//
// Its methods are called from memberlist's goroutines, several at a time,
// and must not block: the packet receive loop and the failure detector wait
// on them. None of them may call Shutdown.
//
// memberlist sends a broadcast only from the node that queued it, to
// RetransmitMult*ceil(log10(N+1)) random members (4 in clusters of up to 9
// nodes, 8 up to 99): in larger clusters an implementation that learns
// something new from MergeMessage or MergeState should Broadcast it again
// (as serf does with its events) so that it spreads in O(log N) gossip
// rounds instead of waiting for push/pull.
type SharedState interface {
	// LocalState returns the full state, sent to a peer on every join
	// (both ways) and every PushPullInterval (to one random member). At
	// most MaxStateBytes: a larger state is not sent (and an error is
	// logged) because memberlist would refuse the whole exchange, and
	// membership with it. With encryption its LZW-compressed form must fit
	// too: text-like state always does, incompressible bytes only up to
	// ~14.5 MiB. The returned slice is not modified or kept.
	LocalState() []byte
	// MergeState merges a peer's LocalState. buf is only valid during the
	// call: copy it to keep it.
	MergeState(buf []byte)
	// MergeMessage merges a message that Node.Broadcast sent on another
	// node. buf is only valid during the call.
	MergeMessage(buf []byte)
}

// PeerStore persists the gossip addresses of known peers. Its methods are
// called from one goroutine at a time.
type PeerStore interface {
	LoadPeers() ([]string, error)
	SavePeers(addrs []string) error
}

// Status of a member as this node sees it.
type Status string

const (
	StatusAlive    Status = "alive"
	StatusDraining Status = "draining" // in the cluster, instances out of every ring
	StatusLeaving  Status = "leaving"  // announced a graceful leave
	StatusLeft     Status = "left"     // left gracefully; listed for an hour
	StatusFailed   Status = "failed"   // stopped answering without leaving; listed for an hour
)

// Member is one node as this node sees it.
type Member struct {
	Name        string
	Addr        string // gossip host:port
	Status      Status
	Services    map[string][]string
	Version     string
	Fingerprint string
	// CheckFailing: the member's health check of its instance fails, and
	// drains it (gossiped; the member's own CheckState says why).
	CheckFailing bool
}
