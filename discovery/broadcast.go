package discovery

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Broadcasts ride in gossip packets of UDPBufferSize (1,400) bytes: minus
// compoundHeaderOverhead (2), compoundOverhead (2) and userMsgOverhead (1),
// the cluster label (2 + its length, when set) and encryption (45 bytes at
// most; 29 with the protocol version memberlist uses by default), so a
// framed message of at most 1,395 bytes (1,350 encrypted) is gossiped, and a
// Broadcast payload of at most 1,394 (1,349). A larger message would sit in
// memberlist's queue forever, as GetBroadcasts skips what does not fit:
// Broadcast sends it over TCP instead (SendReliable to every member), up to
// maxUserMsgBytes, the largest user message memberlist reads from a stream.
// TestBroadcastSizeBoundary checks the gossip limit against memberlist.
const (
	maxUserMsgBytes = 20 << 20 // memberlist's maxUserMsgBytes

	// memberlist's per-packet and per-message overheads for user broadcasts:
	// compoundHeaderOverhead + compoundOverhead + userMsgOverhead.
	gossipOverhead = 2 + 2 + 1
	// encryptOverheadMax is encryption's largest overhead per packet
	// (encryption version 0; version 1 needs 29).
	encryptOverheadMax = 45

	// maxQueuedBroadcasts bounds the gossip queue, as serf does: past it the
	// messages sent most often are dropped (full state exchanges carry
	// what they said). New messages go out first whatever the depth.
	maxQueuedBroadcasts = 4096
	// maxOversizedPending bounds the large broadcasts waiting to be sent
	// over TCP; past it the oldest is dropped, with a warning.
	maxOversizedPending = 256
)

// gossipLimit is the largest framed user message that memberlist puts in a
// gossip packet with configuration c.
func gossipLimit(c *memberlist.Config, encrypted bool) int {
	limit := c.UDPBufferSize - gossipOverhead
	if c.Label != "" {
		limit -= 2 + len(c.Label)
	}
	if encrypted {
		limit -= encryptOverheadMax
	}
	return limit
}

// Broadcast sends msg to every other member, where it reaches
// SharedState.MergeMessage. It copies msg, never blocks, and does nothing
// after Shutdown.
//
// A message that fits in a gossip packet (a payload of up to 1,394 bytes;
// 1,349 with encryption; less with a cluster label) is queued for gossip: a
// newer message with the same key replaces an older one still queued (an
// empty key replaces nothing). A larger one, up to 20 MiB, is sent over TCP
// to every alive member by a background goroutine, newest per key, and a
// member it cannot reach gets the change from the next full state exchange
// (a warning says so). Gossip loses messages too (UDP): delivery is best
// effort either way, and the full state exchanges are what guarantee
// convergence. Messages may arrive in any order.
func (n *Node) Broadcast(key string, msg []byte) {
	if n.isClosed() {
		return
	}
	n.gossip.broadcast(key, msg)
}

// broadcaster sends SharedState messages to the other members: one that
// fits in a gossip packet is queued for memberlist's gossip (queue, which
// memberlist drains through GetBroadcasts), a larger one goes over TCP to
// every member in the cluster, sent by run, newest per key.
//
// Concurrency: broadcast may be called from any goroutine, and memberlist
// calls queue's methods from its own goroutines (the queue has a lock of
// its own); run is one goroutine. big's lock is a leaf.
type broadcaster struct {
	log       *slog.Logger
	queue     *memberlist.TransmitLimitedQueue
	gossipMax int // largest framed message gossiped; larger go over TCP
	big       oversizedQueue
	members   *memberTable // whom run sends large messages to
	send      func(to *memberlist.Node, msg []byte) error

	sent        atomic.Int64 // large broadcasts sent over TCP (tests)
	pruneLogged atomic.Int64
}

// newBroadcaster returns a broadcaster whose gossip queue retransmits each
// message retransmitMult*log(numNodes()) times. numNodes is called only
// once a message is queued; send (memberlist's SendReliable) only by run.
func newBroadcaster(log *slog.Logger, members *memberTable, numNodes func() int, retransmitMult, gossipMax int,
	send func(to *memberlist.Node, msg []byte) error) *broadcaster {
	return &broadcaster{
		log:       log,
		queue:     &memberlist.TransmitLimitedQueue{NumNodes: numNodes, RetransmitMult: retransmitMult},
		gossipMax: gossipMax,
		big:       oversizedQueue{wake: make(chan struct{}, 1)},
		members:   members,
		send:      send,
	}
}

// broadcast queues msg for gossip or for run: see Node.Broadcast.
func (b *broadcaster) broadcast(key string, msg []byte) {
	framed := make([]byte, 1+len(msg))
	framed[0] = msgShared
	copy(framed[1:], msg)
	switch {
	case len(framed) <= b.gossipMax:
		b.big.forget(key) // this one is newer than a queued large one
		if key == "" {
			b.queue.QueueBroadcast(uniqueBroadcast(framed))
		} else {
			b.queue.QueueBroadcast(&namedBroadcast{name: key, msg: framed})
		}
		if queued := b.queue.NumQueued(); queued > maxQueuedBroadcasts {
			b.queue.Prune(maxQueuedBroadcasts)
			if logDue(&b.pruneLogged, time.Minute) {
				b.log.Warn("gossip queue full: dropped the most retransmitted broadcasts; full state exchanges carry them",
					"queued", queued, "limit", maxQueuedBroadcasts)
			}
		}
	case len(framed) <= maxUserMsgBytes:
		if dropped, ok := b.big.push(key, framed); ok {
			b.log.Warn("too many large broadcasts waiting: dropped the oldest; full state exchanges carry it",
				"key", dropped.key, "bytes", len(dropped.msg)-1)
		}
	default:
		b.log.Error("broadcast too large to send; only full state exchanges can carry it",
			"key", key, "bytes", len(msg), "limit", maxUserMsgBytes-1)
	}
}

// namedBroadcast is a gossiped message that a newer one with the same name
// replaces in memberlist's queue.
type namedBroadcast struct {
	name string
	msg  []byte
}

var _ memberlist.NamedBroadcast = (*namedBroadcast)(nil)

func (b *namedBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(memberlist.NamedBroadcast)
	return ok && o.Name() == b.name
}
func (b *namedBroadcast) Name() string    { return b.name }
func (b *namedBroadcast) Message() []byte { return b.msg }
func (b *namedBroadcast) Finished()       {}

// uniqueBroadcast is a gossiped message that replaces none (empty key).
type uniqueBroadcast []byte

var _ memberlist.UniqueBroadcast = uniqueBroadcast(nil)

func (uniqueBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b uniqueBroadcast) Message() []byte                     { return b }
func (uniqueBroadcast) Finished()                             {}
func (uniqueBroadcast) UniqueBroadcast()                      {}

// keyedMsg is a framed message waiting to be sent over TCP.
type keyedMsg struct {
	key string
	msg []byte
}

// oversizedQueue holds the broadcasts too large for a gossip packet until
// the sender goroutine takes them, newest per key.
type oversizedQueue struct {
	mu      sync.Mutex
	pending []keyedMsg
	wake    chan struct{} // capacity 1
}

// push queues m, replacing a pending message with the same (non-empty) key.
// When the queue is full it drops the oldest message and returns it.
func (q *oversizedQueue) push(key string, msg []byte) (dropped keyedMsg, ok bool) {
	q.mu.Lock()
	replaced := false
	if key != "" {
		for i := range q.pending {
			if q.pending[i].key == key {
				q.pending[i].msg = msg
				replaced = true
				break
			}
		}
	}
	if !replaced {
		if len(q.pending) >= maxOversizedPending {
			dropped, ok = q.pending[0], true
			q.pending = q.pending[1:]
		}
		q.pending = append(q.pending, keyedMsg{key: key, msg: msg})
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return dropped, ok
}

// forget drops a pending message with key (not yet sent): a newer message
// with the same key was queued for gossip.
func (q *oversizedQueue) forget(key string) {
	if key == "" {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := range q.pending {
		if q.pending[i].key == key {
			q.pending = append(q.pending[:i], q.pending[i+1:]...)
			return
		}
	}
}

func (q *oversizedQueue) pop() (keyedMsg, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		return keyedMsg{}, false
	}
	m := q.pending[0]
	q.pending[0] = keyedMsg{}
	q.pending = q.pending[1:]
	return m, true
}

// run sends the large broadcasts over TCP, one at a time, until done is
// closed.
func (b *broadcaster) run(done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case <-b.big.wake:
		}
		for !isDone(done) {
			m, ok := b.big.pop()
			if !ok {
				break
			}
			b.sendToAll(m)
		}
	}
}

// sendToAll sends a framed message over TCP to every other member this node
// sees in the cluster (draining and leaving included).
func (b *broadcaster) sendToAll(m keyedMsg) {
	var peers []*memberlist.Node
	for _, p := range b.members.others() {
		if p.status != StatusLeft && p.status != StatusFailed {
			peers = append(peers, p.node)
		}
	}
	errs := make([]error, len(peers))
	sendEach(b.send, peers, m.msg, func(i int, err error) { errs[i] = err })
	b.sent.Add(1)
	var failed []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, peers[i].Name)
		}
	}
	if len(failed) > 0 {
		b.log.Warn("large broadcast not delivered to every member; the next full state exchange carries it",
			"key", m.key, "bytes", len(m.msg)-1, "failed", strings.Join(failed, ","), "err", errors.Join(errs...))
		return
	}
	b.log.Debug("large broadcast sent over TCP", "key", m.key, "bytes", len(m.msg)-1, "members", len(peers))
}

// sendEach sends msg to each of peers, joinParallel at a time, and calls
// finished (from the sending goroutines, concurrently) with the index and
// the outcome of each send as it ends. It returns when every send has.
func sendEach(send func(to *memberlist.Node, msg []byte) error, peers []*memberlist.Node, msg []byte, finished func(i int, err error)) {
	sem := make(chan struct{}, joinParallel)
	var wg sync.WaitGroup
	for i, p := range peers {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			finished(i, send(p, msg))
		})
	}
	wg.Wait()
}

// isDone reports whether done is closed.
func isDone(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}
