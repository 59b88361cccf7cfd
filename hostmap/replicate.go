package hostmap

import (
	"bytes"
	"maps"
	"slices"
	"strings"
	"time"
)

// broadcastMax is the largest change broadcast entry by entry. A larger
// local change (a bulk import) is sent in chunks of at most bulkChunk
// entries, each in one message that the gossip layer sends to every member
// over TCP (a chunk of over broadcastMax entries never fits in a gossip
// packet).
const (
	broadcastMax = 256
	bulkChunk    = 4096 // ~300 KB of typical entries, 3.2 MB at most
)

// send broadcasts local changes to the other nodes: a small change entry by
// entry (a newer message of a host replaces an older one still queued; the
// receivers relay what is new to them), a bulk change in direct chunks.
func (t *Table) send(entries []Entry) {
	fn := t.broadcast.Load()
	if fn == nil || *fn == nil {
		return
	}
	if len(entries) <= broadcastMax {
		t.gossip(*fn, entries)
		return
	}
	// Chunks of equal size, so that none is small enough to be gossiped
	// (to a few members, without relay). The empty key: a chunk replaces
	// no other.
	chunks := (len(entries) + bulkChunk - 1) / bulkChunk
	for chunk := range slices.Chunk(entries, (len(entries)+chunks-1)/chunks) {
		(*fn)("", encodeFormat(nil, formatDirect, chunk))
	}
	t.log.Debug("bulk override change sent to every member", "entries", len(entries), "messages", chunks)
}

// relay passes on what other nodes sent that was new here, as serf does with
// its events: memberlist gossips a broadcast only from the node that queued
// it, to a few members, so in a large cluster news spreads by relay. Only
// what was new here is sent, so relaying stops. A change too large to be
// gossiped entry by entry is left to the full-state exchanges.
func (t *Table) relay(entries []Entry) {
	fn := t.broadcast.Load()
	if fn == nil || *fn == nil || len(entries) == 0 {
		return
	}
	if len(entries) > broadcastMax {
		t.log.Info("override changes from the cluster spread on with the next full-state exchange", "entries", len(entries))
		return
	}
	t.gossip(*fn, entries)
}

func (t *Table) gossip(fn func(key string, msg []byte), entries []Entry) {
	for _, e := range entries {
		fn("override:"+e.Host, encodeEntries(nil, []Entry{e}))
	}
}

// LocalState encodes the whole table, tombstones included, for memberlist's
// push/pull state exchange.
func (t *Table) LocalState() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == nil {
		// Sorted, so that two nodes with the same table send the same
		// bytes, and a converged exchange is skipped with one comparison.
		all := slices.SortedFunc(maps.Values(t.entries), func(a, b Entry) int { return strings.Compare(a.Host, b.Host) })
		t.state = encodeEntries(make([]byte, 0, 64*len(all)+8), all)
	}
	return t.state
}

// inbound is a message or full state from another node, waiting to be merged.
type inbound struct {
	buf      []byte
	state    bool  // a full state, not a broadcast
	received int64 // UnixNano
}

// MergeState merges a peer's LocalState. It copies buf and returns at once;
// the merge happens on the table's own goroutine.
func (t *Table) MergeState(buf []byte) { t.enqueue(t.states, buf, true) }

// MergeMessage merges a broadcast sent by another node's table. Like
// MergeState it copies buf and returns at once.
func (t *Table) MergeMessage(buf []byte) { t.enqueue(t.messages, buf, false) }

func (t *Table) enqueue(q chan *inbound, buf []byte, state bool) {
	in := &inbound{buf: slices.Clone(buf), state: state, received: time.Now().UnixNano()}
	t.pendingMu.Lock()
	t.pending[in] = struct{}{} // before the send: the merge may be done before we return
	t.pendingMu.Unlock()
	select {
	case q <- in:
	default:
		// The next full-state exchange brings whatever this drops.
		t.merged([]*inbound{in}, false)
		t.log.Warn("override merge queue full; dropping a message until the next state exchange")
	}
}

// merged forgets pending work: ins are merged (ok), or lost (a failed
// commit, a full queue) until a full state received later is merged.
func (t *Table) merged(ins []*inbound, ok bool) {
	t.pendingMu.Lock()
	defer t.pendingMu.Unlock()
	for _, in := range ins {
		delete(t.pending, in)
		switch {
		case !ok && (t.failedSince == 0 || in.received < t.failedSince):
			t.failedSince = in.received
		case ok && in.state && in.received >= t.failedSince:
			// A full state sent after the loss brings what was lost
			// (give or take what its sender had not heard of yet,
			// which a later exchange brings).
			t.failedSince = 0
		}
	}
}

// PendingSince is when the oldest change received from another node that
// is not applied here yet arrived: queued, being merged, or lost by a merge
// that could not commit and not yet repaired by a full-state exchange. It
// is the zero Time when there is none. For metrics: replication lag.
func (t *Table) PendingSince() time.Time {
	t.pendingMu.Lock()
	oldest := t.failedSince
	for in := range t.pending {
		if oldest == 0 || in.received < oldest {
			oldest = in.received
		}
	}
	t.pendingMu.Unlock()
	if oldest == 0 {
		return time.Time{}
	}
	return time.Unix(0, oldest)
}

// Queue sizes. Messages come in bursts of up to broadcastMax (one per
// changed entry) from each writer; full states a few per push/pull interval,
// but each may be megabytes.
const (
	messageQueue = 4 * broadcastMax
	stateQueue   = 4
)

// mergeBatch bounds how many queued messages one commit merges.
const mergeBatch = messageQueue

// mergeLoop merges what other nodes send, off memberlist's goroutines. It
// takes everything queued at once and merges it in one commit: one fsync
// per burst, not per message, so a burst of broadcasts cannot outrun it.
func (t *Table) mergeLoop() {
	defer t.wg.Done()
	for {
		var batch []*inbound
		select {
		case <-t.done:
			return
		case in := <-t.states:
			batch = append(batch, in)
		case in := <-t.messages:
			batch = append(batch, in)
		}
	drain:
		for len(batch) < mergeBatch {
			select {
			case in := <-t.messages:
				batch = append(batch, in)
			case in := <-t.states:
				batch = append(batch, in)
			default:
				break drain
			}
		}
		t.merged(batch, t.mergeRemote(batch))
	}
}

// mergeRemote decodes and merges a batch of messages and states, then
// relays what was new here. It reports false when the merge could not be
// committed.
func (t *Table) mergeRemote(batch []*inbound) bool {
	var entries []Entry
	var direct map[Entry]bool // entries that came in messages not to relay
	for _, in := range batch {
		if in.state && bytes.Equal(in.buf, t.LocalState()) {
			continue // a peer with the same table: the usual push/pull
		}
		decoded, err := decodeEntries(in.buf)
		if err != nil {
			t.log.Warn("ignoring an override message from another node", "err", err)
			continue
		}
		if !in.state && in.buf[0] == formatDirect {
			if direct == nil {
				direct = make(map[Entry]bool, len(decoded))
			}
			for _, e := range decoded {
				direct[e] = true
			}
		}
		entries = append(entries, decoded...)
	}
	if len(entries) == 0 {
		return true
	}
	newer, err := t.merge(entries)
	if err != nil {
		t.log.Error("cannot store overrides from another node", "err", err)
		return false
	}
	if t.opts.OnReplicated != nil {
		now := t.opts.now()
		for _, e := range newer {
			t.opts.OnReplicated(now.Sub(e.Version.Time()))
		}
	}
	if len(newer) > 0 {
		t.log.Info("overrides updated from the cluster", "changed", len(newer))
		if direct != nil {
			// Its writer sent it to every member: relaying it would
			// make every receiver send it to every member again.
			newer = slices.DeleteFunc(newer, func(e Entry) bool { return direct[e] })
		}
		t.relay(newer)
	}
	return true
}
