package discovery

import (
	"math/rand/v2"
	"time"
)

// Healing: memberlist gives up on members it declared dead, and takes a
// restarted member's new address only late. These loops rejoin them (as
// serf's reconnect does) and make sure full state is exchanged with members
// that come back, so that what either side missed is repaired.

// reclaimQueue bounds the addresses reclaimLoop has not taken yet.
const reclaimQueue = 16

// reclaimEvery is how often reclaimLoop retries one address.
const reclaimEvery = 500 * time.Millisecond

// reclaimLoop takes back members that restarted under the same name at a
// new address (NotifyConflict). It joins the new address, a full state
// exchange in which the restarted node sends its alive message, every
// reclaimEvery until this node lists the name alive there, or reclaimWait
// ends. Before DeadNodeReclaimTime has passed since the old address died,
// memberlist refuses the new one again (another conflict): that is why it
// retries.
func (n *Node) reclaimLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(reclaimEvery)
	defer tick.Stop()
	trying := map[string]time.Time{} // address -> until when
	for {
		select {
		case <-n.done:
			return
		case addr := <-n.reclaims:
			if _, ok := trying[addr]; !ok && len(trying) < reclaimQueue {
				n.log.Info("a member restarted at a new address; taking it back", "addr", addr)
				trying[addr] = time.Now().Add(n.reclaimWait)
			}
			continue
		case <-tick.C:
		}
		for addr, until := range trying {
			if n.table.aliveAt(addr) {
				delete(trying, addr)
				continue
			}
			if time.Now().After(until) {
				n.log.Warn("member at a new address not taken back; push/pull will retry", "addr", addr)
				delete(trying, addr)
				continue
			}
			if _, err := n.join([]string{addr}, joinFirstAnswer); err != nil {
				n.log.Debug("reclaim: no answer", "addr", addr, "err", err)
			}
		}
	}
}

// reconnectLoop tries, every reconnectEvery, to rejoin one failed member
// that is still remembered (for forgetAfter). memberlist gossips to dead
// nodes only for a short while, then never again: after a long partition each
// side would go on without the other. One attempt per interval, at random, is
// how serf heals that at little cost.
//
// With a SharedState it also makes sure that, after members came back from
// failed (a healed partition, a restart), this node exchanges full state with
// one of them: a rejoin does that, and when another node's rejoin brought
// them back first, a join to one of them does. One exchange with any node of
// the other side is enough when that side agreed within itself; the
// periodic push/pull repairs the rest. Without it, a node would wait for its
// random push/pull to pick the other side: tens of seconds in a large cluster.
func (n *Node) reconnectLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(n.tun.reconnectEvery)
	defer tick.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-tick.C:
		}
		failed, resync := n.table.reconnectTargets()
		if len(failed) > 0 {
			addr := failed[rand.IntN(len(failed))]
			if _, err := n.join([]string{addr}, joinFirstAnswer); err != nil {
				n.log.Debug("reconnect to failed member did not answer", "addr", addr, "err", err)
			} else {
				n.log.Info("reconnected to a failed member", "addr", addr)
				n.table.exchanged(time.Now()) // the rejoin was a full state exchange
				continue
			}
		}
		if resync.addr != "" {
			if _, err := n.join([]string{resync.addr}, joinFirstAnswer); err != nil {
				n.log.Debug("state exchange with a recovered member failed", "addr", resync.addr, "err", err)
				continue
			}
			n.log.Debug("exchanged state with a recovered member", "addr", resync.addr, "was_down", resync.down.Round(time.Millisecond))
			n.table.exchanged(time.Now())
		}
	}
}

// settleDelay is how long after the last join of a burst settleLoop waits
// before its full state exchange.
const settleDelay = 2 * time.Second

// settleLoop repairs the join stall: when many nodes join at once, a node
// can miss the alive message of one that joined just after it (gossip
// retransmits each message only a few times), and stay unaware of it until
// the next periodic push/pull, which memberlist stretches to 30 s and more
// in large clusters (FINDINGS.md, "join stall"). After members joined, once
// no more have for settleDelay, this node exchanges full state with one
// random alive member, which knows the one it missed. A cluster that does
// not change does no exchange.
func (n *Node) settleLoop() {
	defer n.wg.Done()
	var due <-chan time.Time
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-n.done:
			return
		case <-n.joinedSome:
			if timer == nil {
				timer = time.NewTimer(n.tun.settleDelay)
			} else {
				timer.Reset(n.tun.settleDelay)
			}
			due = timer.C
			continue
		case <-due:
			due = nil
		}
		peers := n.table.peerAddrs()
		if len(peers) == 0 {
			continue
		}
		addr := peers[rand.IntN(len(peers))]
		if _, err := n.join([]string{addr}, joinFirstAnswer); err != nil {
			n.log.Debug("state exchange after joins failed", "addr", addr, "err", err)
			continue
		}
		n.log.Debug("exchanged state after joins", "addr", addr)
	}
}
