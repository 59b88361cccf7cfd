package discovery

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Framing. Every user message this package sends starts with a kind byte,
// and every full state with a format byte, so that later releases can add
// message kinds and state formats next to these ones. A node ignores (with a
// debug line) the kinds and formats it does not know, as a node of an older
// release does in a mixed cluster.
const (
	msgShared    byte = 1 // then the payload for SharedState.MergeMessage; 2 and 3: keys.go
	stateFormat1 byte = 1 // then SharedState.LocalState
)

// Size limits. The memberlist ones are unexported constants of memberlist
// v0.7.0 (net.go), repeated here. TestBroadcastSizeBoundary checks the gossip
// limit against memberlist; TestStateSizeLimit (DISCOVERY_BIG_STATE=1) the
// push/pull one.
//
// Full state (push/pull): a peer refuses a push/pull whose user state is over
// maxPushStateBytes, 20 MiB (readRemoteState: "user state length (N) exceeds
// limit"), and the whole exchange fails with it, membership included: the
// join fails, or the periodic sync. Hence MaxStateBytes, and localState
// sends nothing rather than too much. Streams are LZW-compressed; with
// encryption the compressed, encrypted message must also fit in 20 MiB
// (decryptRemoteState). Override-like text compresses 2.8 times, so that
// never binds; incompressible bytes grow 1.37 times, and an encrypted
// cluster then refuses states over ~14.5 MiB (measured, same test).
// Measured on loopback: a join exchanging two 2 MB states takes ~75 ms, two
// 20 MiB states ~1.2 s (LZW: ~0.3 s each way per 20 MiB), far inside
// memberlist's TCPTimeout for the whole exchange (10 s lan and fast, 30 s
// wan); on the wire 20 MiB of overrides is ~7.5 MB.
//
// An override takes ~60-100 bytes of state (host, backend, version, tombstone
// flag), so MaxStateBytes holds 210,000-350,000 of them; 100,000 overrides
// take 6-10 MB. Every push/pull carries the whole state: at 100,000
// overrides each node sends and receives 6-10 MB (2-4 MB compressed) every
// PushPullInterval (5 s fast, 15 s lan, 30 s wan) plus one per join. Past a
// few tens of thousands of entries a digest-first exchange (a hash per range
// of keys, then only the ranges that differ) would be cheaper; SharedState
// leaves its format to the application.
//
// Broadcasts ride in gossip packets of UDPBufferSize (1,400) bytes: minus
// compoundHeaderOverhead (2), compoundOverhead (2) and userMsgOverhead (1),
// the cluster label (2 + its length, when set) and encryption (45 bytes at
// most; 29 with the protocol version memberlist uses by default), so a
// framed message of at most 1,395 bytes (1,350 encrypted) is gossiped, and a
// Broadcast payload of at most 1,394 (1,349). A larger message would sit in
// memberlist's queue forever, as GetBroadcasts skips what does not fit:
// Broadcast sends it over TCP instead (SendReliable to every member), up to
// maxUserMsgBytes, the largest user message memberlist reads from a stream.
const (
	maxPushStateBytes = 20 << 20 // memberlist's maxPushStateBytes
	maxUserMsgBytes   = 20 << 20 // memberlist's maxUserMsgBytes

	// MaxStateBytes is the largest SharedState.LocalState that can be
	// exchanged: memberlist's 20 MiB push/pull limit minus the format byte.
	MaxStateBytes = maxPushStateBytes - 1

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
	framed := make([]byte, 1+len(msg))
	framed[0] = msgShared
	copy(framed[1:], msg)
	switch {
	case len(framed) <= n.gossipMax:
		n.big.forget(key) // this one is newer than a queued large one
		if key == "" {
			n.bcast.QueueBroadcast(uniqueBroadcast(framed))
		} else {
			n.bcast.QueueBroadcast(&namedBroadcast{name: key, msg: framed})
		}
		if queued := n.bcast.NumQueued(); queued > maxQueuedBroadcasts {
			n.bcast.Prune(maxQueuedBroadcasts)
			if logDue(&n.pruneLogged, time.Minute) {
				n.log.Warn("gossip queue full: dropped the most retransmitted broadcasts; full state exchanges carry them",
					"queued", queued, "limit", maxQueuedBroadcasts)
			}
		}
	case len(framed) <= maxUserMsgBytes:
		if dropped, ok := n.big.push(key, framed); ok {
			n.log.Warn("too many large broadcasts waiting: dropped the oldest; full state exchanges carry it",
				"key", dropped.key, "bytes", len(dropped.msg)-1)
		}
	default:
		n.log.Error("broadcast too large to send; only full state exchanges can carry it",
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

// oversizedLoop sends the large broadcasts over TCP, one at a time.
func (n *Node) oversizedLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.done:
			return
		case <-n.big.wake:
		}
		for !n.isClosed() {
			m, ok := n.big.pop()
			if !ok {
				break
			}
			n.sendToAll(m)
		}
	}
}

// sendToAll sends a framed message over TCP to every other member this node
// sees alive (draining and leaving included), joinParallel at a time.
func (n *Node) sendToAll(m keyedMsg) {
	var peers []*memberlist.Node
	for _, p := range n.table.others() {
		if p.status != StatusLeft && p.status != StatusFailed {
			peers = append(peers, p.node)
		}
	}

	errs := make([]error, len(peers))
	sem := make(chan struct{}, joinParallel)
	var wg sync.WaitGroup
	for i, p := range peers {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = n.ml.SendReliable(p, m.msg)
		})
	}
	wg.Wait()
	n.oversizedSent.Add(1)
	var failed []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, peers[i].Name)
		}
	}
	if len(failed) > 0 {
		n.log.Warn("large broadcast not delivered to every member; the next full state exchange carries it",
			"key", m.key, "bytes", len(m.msg)-1, "failed", strings.Join(failed, ","), "err", errors.Join(errs...))
		return
	}
	n.log.Debug("large broadcast sent over TCP", "key", m.key, "bytes", len(m.msg)-1, "members", len(peers))
}

// localState frames SharedState.LocalState for a push/pull, or returns nil
// when there is nothing to send or it is too large to be accepted.
func (n *Node) localState() []byte {
	s := n.cfg.SharedState
	if s == nil {
		return nil
	}
	body := s.LocalState()
	if len(body) == 0 {
		return nil
	}
	if len(body) > MaxStateBytes {
		// Sending it would make every peer refuse the whole exchange,
		// membership included: keep membership working.
		if logDue(&n.stateTooBigLogged, 10*time.Minute) {
			n.log.Error("shared state too large for a full state exchange: not sent; nodes that miss broadcasts will not catch up",
				"bytes", len(body), "limit", MaxStateBytes)
		}
		return nil
	}
	if len(body) > MaxStateBytes/2 && logDue(&n.stateLargeLogged, time.Hour) {
		n.log.Warn("shared state is over half the size a full state exchange accepts",
			"bytes", len(body), "limit", MaxStateBytes)
	}
	buf := make([]byte, 1+len(body))
	buf[0] = stateFormat1
	copy(buf[1:], body)
	return buf
}

// mergeState hands a peer's full state to SharedState.
func (n *Node) mergeState(buf []byte) {
	if len(buf) == 0 {
		return
	}
	if buf[0] != stateFormat1 {
		n.log.Debug("ignored shared state in an unknown format", "format", buf[0], "bytes", len(buf))
		return
	}
	if s := n.cfg.SharedState; s != nil {
		s.MergeState(buf[1:])
	}
}

// receive dispatches a user message by its kind byte.
func (n *Node) receive(buf []byte) {
	if len(buf) == 0 {
		n.log.Debug("ignored empty gossip message")
		return
	}
	switch buf[0] {
	case msgShared:
		if s := n.cfg.SharedState; s != nil {
			s.MergeMessage(buf[1:])
		}
	case msgKeyRequest:
		n.receiveKeyRequest(buf[1:])
	case msgKeyResponse:
		n.receiveKeyResponse(buf[1:])
	default:
		n.log.Debug("ignored gossip message of unknown kind", "kind", buf[0], "bytes", len(buf))
	}
}

// logDue reports whether a rate-limited log line is due: at most once per
// every, per last.
func logDue(last *atomic.Int64, every time.Duration) bool {
	now := time.Now().UnixNano()
	prev := last.Load()
	if prev != 0 && now-prev < int64(every) {
		return false
	}
	return last.CompareAndSwap(prev, now)
}
