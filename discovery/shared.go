package discovery

import (
	"sync/atomic"
	"time"
)

// Framing. Every user message this package sends starts with a kind byte,
// and every full state with a format byte, so that later releases can add
// message kinds and state formats next to these ones. A node ignores (with a
// debug line) the kinds and formats it does not know, as a node of an older
// release does in a mixed cluster.
const (
	msgShared    byte = 1 // then the payload for SharedState.MergeMessage; 2 and 3: keys.go; 4 and 5: services.go
	stateFormat1 byte = 1 // then SharedState.LocalState
)

// Size limits. The memberlist ones are unexported constants of memberlist
// v0.7.0 (net.go), repeated here (broadcast.go has those of broadcasts).
// TestStateSizeLimit (DISCOVERY_BIG_STATE=1) checks the push/pull one.
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

const (
	maxPushStateBytes = 20 << 20 // memberlist's maxPushStateBytes

	// MaxStateBytes is the largest SharedState.LocalState that can be
	// exchanged: memberlist's 20 MiB push/pull limit minus the format byte.
	MaxStateBytes = maxPushStateBytes - 1
)

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
	case msgServicesRequest:
		n.receiveServicesRequest(buf[1:])
	case msgServicesResponse:
		n.receiveServicesResponse(buf[1:])
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
