package discovery

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegates implements memberlist's callbacks for a Node. memberlist calls
// most of them with its own lock held, so they only record state (in the
// member table, under its lock) and signal the event loop: no I/O, no
// waiting (the one exception is the log line of a refused node, written
// once per node).
type delegates struct{ n *Node }

var (
	_ memberlist.Delegate         = delegates{}
	_ memberlist.EventDelegate    = delegates{}
	_ memberlist.AliveDelegate    = delegates{}
	_ memberlist.MergeDelegate    = delegates{}
	_ memberlist.ConflictDelegate = delegates{}
)

// NodeMeta returns this node's metadata. Its size was checked against
// memberlist.MetaMaxSize when it was set (advertise), as memberlist panics
// past it.
func (d delegates) NodeMeta(limit int) []byte {
	d.n.metaMu.Lock()
	defer d.n.metaMu.Unlock()
	if len(d.n.localBytes) > limit {
		return nil // unreachable: advertise refuses it
	}
	return d.n.localBytes
}

// NotifyMsg receives a user message, gossiped or sent over TCP (shared.go).
func (d delegates) NotifyMsg(buf []byte) { d.n.receive(buf) }

// GetBroadcasts hands memberlist the queued broadcasts that fit in limit.
func (d delegates) GetBroadcasts(overhead, limit int) [][]byte {
	return d.n.gossip.queue.GetBroadcasts(overhead, limit)
}

// LocalState and MergeRemoteState carry SharedState in every push/pull, in
// both directions: the joiner's Join and each periodic sync send ours and
// merge theirs, and the node that answers does the same (join or not).
func (d delegates) LocalState(bool) []byte              { return d.n.localState() }
func (d delegates) MergeRemoteState(buf []byte, _ bool) { d.n.mergeState(buf) }

// NotifyAlive keeps nodes with other ring settings (or unreadable metadata)
// out of the member list, whichever way their alive message arrives.
func (d delegates) NotifyAlive(peer *memberlist.Node) error {
	return d.n.admit(peer)
}

// NotifyMerge refuses a join with a cluster that has a node we would not
// admit, so that the joiner's Join fails with the reason.
func (d delegates) NotifyMerge(peers []*memberlist.Node) error {
	for _, p := range peers {
		// Here (only) State is set: dead and left nodes are not merged.
		if p.State != memberlist.StateAlive && p.State != memberlist.StateSuspect {
			continue
		}
		if err := d.n.admit(p); err != nil {
			return err
		}
	}
	return nil
}

// NotifyConflict: two addresses claim one name. memberlist keeps the first
// and logs the conflict itself. Usually the member restarted at a new
// address before the old one was declared dead: memberlist takes the new
// address only from an alive message that arrives DeadNodeReclaimTime after
// the old one died, and the restarted node sends its next one with its next
// push/pull (5-30 s away). reclaimLoop asks it sooner. Must not block.
func (d delegates) NotifyConflict(existing, other *memberlist.Node) {
	if existing.Name == d.n.cfg.Name {
		return // about this node itself: memberlist refutes it
	}
	select {
	case d.n.reclaims <- nodeAddr(other):
	default: // a burst of conflicts: reconnectLoop and push/pull still heal it
	}
}

func (d delegates) NotifyJoin(node *memberlist.Node)   { d.n.observe(node, false) }
func (d delegates) NotifyUpdate(node *memberlist.Node) { d.n.observe(node, false) }
func (d delegates) NotifyLeave(node *memberlist.Node)  { d.n.observe(node, true) }

func nodeAddr(node *memberlist.Node) string {
	return net.JoinHostPort(node.Addr.String(), strconv.Itoa(int(node.Port)))
}

// admit decides whether peer may be a member: its metadata must decode and
// its ring settings must be ours, or the two would hash keys differently.
func (n *Node) admit(peer *memberlist.Node) error {
	err := n.admitCheck(peer)
	if err != nil {
		n.refusedAlive.Add(1)
	}
	return err
}

// errRefused marks admit's errors. memberlist logs each refused alive
// message with the error (slogWriter turns those lines down to debug):
// refuse logs each refused node once.
var errRefused = errors.New("refused by ringman")

func (n *Node) admitCheck(peer *memberlist.Node) error {
	// The name first: it is in every log line about the node.
	if err := ValidateNodeName(peer.Name); err != nil {
		n.refuse(peer, "", "refused node with an invalid name", err)
		return fmt.Errorf("%w: invalid node name at %s", errRefused, nodeAddr(peer))
	}
	m, err := decodeMeta(peer.Meta)
	if err != nil {
		n.refuse(peer, "", "refused node whose metadata cannot be read", err)
		return fmt.Errorf("%w: node %s at %s: unreadable metadata: %v", errRefused, peer.Name, nodeAddr(peer), err)
	}
	if m.Fingerprint != n.cfg.Fingerprint {
		n.refuse(peer, m.Fingerprint, "refused node with different ring settings", nil)
		return fmt.Errorf("%w: ring settings differ: node %s at %s has fingerprint %q, node %s has %q",
			errRefused, peer.Name, nodeAddr(peer), m.Fingerprint, n.cfg.Name, n.cfg.Fingerprint)
	}
	return nil
}

// refuse logs a refused node once (per node and fingerprint, then again
// every ten minutes), however often its alive messages arrive.
func (n *Node) refuse(peer *memberlist.Node, theirs, msg string, err error) {
	// A name that is not valid is shown escaped and cut short, and
	// remembered by that form: it may be kilobytes of anything.
	name := peer.Name
	if ValidateNodeName(name) != nil {
		name = fmt.Sprintf("%.64q", name)
		if len(peer.Name) > 64 {
			name += fmt.Sprintf("... (%d bytes)", len(peer.Name))
		}
	}
	if !n.table.firstRefusal(name, theirs, time.Now()) {
		return
	}
	args := []any{"node", name, "addr", nodeAddr(peer),
		"their_fingerprint", theirs, "our_fingerprint", n.cfg.Fingerprint}
	if err != nil {
		args = append(args, "err", err)
	}
	n.log.Error(msg, args...)
}

// observe records a join, update or leave (gone) of node.
func (n *Node) observe(node *memberlist.Node, gone bool) {
	var m *meta
	if decoded, err := decodeMeta(node.Meta); err == nil {
		m = &decoded
		if m.Digest != (servicesDigest{}) {
			// Services outside the metadata: this node's own, or held
			// already (record), or to fetch.
			m.Services = n.servicesFor(m.Digest)
			defer n.wakeServices()
		}
		// Before the table has it, so that whoever sees another member
		// alive sees this node joined. (Unreadable metadata changes
		// nothing here: the member was admitted, and joined, before.)
		if !gone && node.Name != n.cfg.Name {
			n.joined.Store(true)
		}
	}
	if n.table.record(node.Name, nodeAddr(node), m, gone, time.Now()) {
		n.markDirty()
	}
}

// run is the event loop: the only goroutine that calls OnChange and saves
// known peers.
func (n *Node) run() {
	defer n.wg.Done()
	prune := time.NewTicker(n.tun.pruneEvery)
	defer prune.Stop()
	co := coalescer{quiet: n.tun.coalesceQuiet, max: n.tun.coalesceMax}
	defer co.stop()
	for {
		select {
		case <-n.done:
			if n.savedPeers.due != nil {
				n.savePeers()
			}
			return
		case <-n.dirty:
			if co.changed(time.Now()) {
				n.publish()
				co.published(time.Now())
			}
		case <-co.due():
			n.publish()
			co.published(time.Now())
		case <-n.savedPeers.due:
			n.savedPeers.due = nil
			n.savePeers()
		case <-prune.C:
			n.table.prune(time.Now())
		}
	}
}

// publish logs the changes recorded since the last call, hands the live set
// to OnChange if it changed, and schedules a save of known peers.
func (n *Node) publish() {
	u := n.table.takeUpdate()
	live, peers := u.live, u.peers
	joined := false
	for _, c := range u.changes {
		n.logChange(c)
		joined = joined || (c.to == StatusAlive && (c.from == "" || c.from == StatusLeft || c.from == StatusFailed))
	}
	if joined {
		select {
		case n.joinedSome <- struct{}{}:
		default: // settleLoop has one pending already
		}
	}
	if u.dropped > 0 {
		n.log.Warn("membership changes not logged: too many at once", "count", u.dropped)
	}
	if members := len(peers) + 1; n.maxNodes > 0 && members > n.maxNodes && !n.oversize {
		n.oversize = true
		n.log.Warn("cluster is larger than this gossip profile was measured to hold; above it, a busy machine may see false failures: use --profile lan",
			"profile", n.cfg.Profile, "members", members, "measured_up_to", n.maxNodes)
	}
	if n.lastLive == nil || !equalServices(live, n.lastLive) {
		n.lastLive = live
		if n.cfg.OnChange != nil {
			n.cfg.OnChange(cloneServices(live))
		}
	}
	if n.cfg.Peers != nil && n.savedPeers.due == nil && len(peers) > 0 && !slices.Equal(peers, n.savedPeers.last) {
		// The first change is saved at once (a node killed right after
		// joining must find its peers when it restarts); a burst after it
		// is saved at most once per peerSaveDelay.
		if wait := n.tun.peerSaveDelay - time.Since(n.savedPeers.at); wait <= 0 {
			n.savePeers()
		} else {
			n.savedPeers.due = time.After(wait)
		}
	}
}

func (n *Node) logChange(c change) {
	if c.name == n.cfg.Name && c.from == "" {
		return // this node starting: the caller announces that
	}
	msg := "node updated"
	switch {
	case c.to == StatusLeft:
		msg = "node left"
	case c.to == StatusFailed:
		msg = "node failed"
	case c.from == "" || c.from == StatusLeft || c.from == StatusFailed:
		msg = "node joined"
	case c.to == StatusDraining && c.from != StatusDraining:
		msg = "node drained"
	case c.to == StatusLeaving && c.from != StatusLeaving:
		msg = "node leaving"
	case c.to == StatusAlive && c.from == StatusDraining:
		msg = "node undrained"
	}
	args := []any{"node", c.name, "addr", c.addr, "status", string(c.to), "services", formatServices(c.services)}
	if c.to == StatusFailed {
		n.log.Warn(msg, args...)
		return
	}
	n.log.Info(msg, args...)
}

// peerSaves is what the event loop knows of its saves of known peers.
type peerSaves struct {
	last []string         // the peers last saved, or loaded at Start
	at   time.Time        // when they were saved
	due  <-chan time.Time // a batched save's timer; nil when none is pending
}

// savePeers stores the current peers, unless there are none: a node cut off
// from everyone must still know where to look when it restarts.
func (n *Node) savePeers() {
	peers := n.table.peerAddrs()
	if len(peers) == 0 || slices.Equal(peers, n.savedPeers.last) {
		return
	}
	if err := n.cfg.Peers.SavePeers(peers); err != nil {
		n.log.Warn("cannot save known peers", "err", err)
		return
	}
	n.savedPeers.last = peers
	n.savedPeers.at = time.Now()
}
