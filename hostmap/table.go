package hostmap

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	bolt "go.etcd.io/bbolt"
)

var bucketOverrides = []byte("overrides")

// broadcastMax is the largest change broadcast entry by entry. A larger
// local change (a bulk import) is sent in chunks of at most bulkChunk
// entries, each in one message that the gossip layer sends to every member
// over TCP (a chunk of over broadcastMax entries never fits in a gossip
// packet).
const (
	broadcastMax = 256
	bulkChunk    = 4096 // ~300 KB of typical entries, 3.2 MB at most
)

// Table is the override table of one node.
type Table struct {
	db   *bolt.DB
	opts Options
	log  *slog.Logger

	index atomic.Pointer[index] // what lookups read

	mu      sync.Mutex // serialises writes and guards what follows
	entries map[string]Entry
	clock   uint64 // the last HLC value issued or seen
	state   []byte // cached LocalState; nil when stale

	broadcast atomic.Pointer[func(key string, msg []byte)]
	messages  chan *inbound // broadcasts from other nodes, not merged yet
	states    chan *inbound // full states from other nodes, not merged yet
	done      chan struct{}

	// pending is what other nodes sent that is not merged yet (queued or
	// being merged), for PendingSince; failedSince is when the oldest
	// message that was lost (a full queue, a failed commit) arrived (0:
	// none), until a full state received after it is merged.
	pendingMu   sync.Mutex
	pending     map[*inbound]struct{}
	failedSince int64

	refused       atomic.Uint64 // entries from other nodes refused for their version
	refusedLogged atomic.Int64  // UnixNano of the last log line about them

	wg        sync.WaitGroup
	closeOnce sync.Once
}

// index is an immutable view of the live overrides.
type index struct {
	backends map[string][]string // host -> one-element slice of its backend
	// filter has a bit set for the hash of every host in backends. Most
	// lookups are for hosts without an override; one bit test in a small,
	// cache-resident array answers them without probing a large map.
	filter []uint64
	// wildDepths has bit d set when some wildcard "*.x" has d labels after
	// the "*.": suffixes of other depths are never probed.
	wildDepths uint64
	// gen counts the indexes published by this table (see Live).
	gen uint64
}

// filterBitsPerHost sizes the filter: 16 bits a host keep false positives
// (which cost one map probe) near 6%.
const filterBitsPerHost = 16

func (idx *index) mayHave(host []byte) bool {
	h := xxhash.Sum64(host)
	return idx.filter[(h>>6)&uint64(len(idx.filter)-1)]&(1<<(h&63)) != 0
}

func (idx *index) add(host string) {
	h := xxhash.Sum64String(host)
	idx.filter[(h>>6)&uint64(len(idx.filter)-1)] |= 1 << (h & 63)
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		idx.wildDepths |= 1 << min(strings.Count(rest, ".")+1, 63)
	}
}

// Open loads the overrides stored in db (bucket "overrides") and returns the
// table. The caller owns db.
func Open(db *bolt.DB, opts Options) (*Table, error) {
	if opts.Node == "" {
		return nil, errors.New("hostmap: node name is empty")
	}
	if opts.TombstoneTTL <= 0 {
		opts.TombstoneTTL = DefaultTombstoneTTL
	}
	if opts.MaxClockOffset <= 0 {
		opts.MaxClockOffset = DefaultMaxClockOffset
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Table{
		db:       db,
		opts:     opts,
		log:      opts.Logger,
		entries:  map[string]Entry{},
		messages: make(chan *inbound, messageQueue),
		states:   make(chan *inbound, stateQueue),
		pending:  map[*inbound]struct{}{},
		done:     make(chan struct{}),
	}
	if opts.Broadcast != nil {
		t.SetBroadcast(opts.Broadcast)
	}
	limit := t.clockLimit()
	var ahead []Entry
	err := t.update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketOverrides)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			e, err := decodeValue(string(k), v)
			if err != nil {
				return fmt.Errorf("stored override %q: %w", k, err)
			}
			t.entries[e.Host] = e
			if e.Version.Clock > limit {
				// Stored before versions were bounded: keep the
				// entry, but do not let it date every later write.
				ahead = append(ahead, e)
			} else {
				t.clock = max(t.clock, e.Version.Clock)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load overrides: %w", err)
	}
	if len(ahead) > 0 {
		e := ahead[0]
		t.log.Warn("stored overrides have versions too far ahead of this node's clock: kept, but later writes are not dated after them; other nodes refuse them, and a write of the host replaces one on this node",
			"count", len(ahead), "host", e.Host, "node", e.Version.Node, "version_time", e.Version.Time(),
			"max_clock_offset", opts.MaxClockOffset)
	}
	t.publishLocked()
	t.wg.Add(2)
	go t.mergeLoop()
	go t.collectLoop()
	return t, nil
}

// Close stops the table's background work (tombstone collection, merging).
func (t *Table) Close() error {
	t.closeOnce.Do(func() { close(t.done) })
	t.wg.Wait()
	return nil
}

// SetBroadcast sets Options.Broadcast after Open (the gossip layer that
// carries the messages is usually started after the table).
func (t *Table) SetBroadcast(fn func(key string, msg []byte)) {
	t.broadcast.Store(&fn)
}

// Set creates or replaces the override of host; host and backend are
// validated (a *FieldError names the bad one) and host is normalised
// (lower-cased). The entry is durable when Set returns.
func (t *Table) Set(host, backend string) (Entry, error) {
	out, err := t.SetMany([]Pair{{Host: host, Backend: backend}})
	if err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			return Entry{}, fe // a single pair needs no index
		}
		return Entry{}, err
	}
	return out[0], nil
}

// SetMany sets every pair in one commit: all or nothing. An invalid pair
// fails the whole call with an error naming its index and wrapping a
// *FieldError. A host given twice keeps the last backend.
func (t *Table) SetMany(pairs []Pair) ([]Entry, error) {
	if len(pairs) == 0 {
		return nil, &FieldError{"host", "no entries given"}
	}
	norm := make([]Pair, len(pairs))
	for i, p := range pairs {
		h, err := NormalizeHost(p.Host)
		if err == nil {
			err = ValidateBackend(p.Backend)
		}
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		norm[i] = Pair{Host: h, Backend: p.Backend}
	}
	t.mu.Lock()
	entries := make([]Entry, len(norm))
	for i, p := range norm {
		entries[i] = Entry{Host: p.Host, Backend: p.Backend, Version: t.nextVersionLocked()}
	}
	err := t.commitLocked(entries)
	t.mu.Unlock()
	if err != nil {
		return nil, err
	}
	t.send(entries)
	return entries, nil
}

// Delete removes the override of host (ErrNotFound if it has none). The
// delete is a tombstone that wins over older sets on every node.
func (t *Table) Delete(host string) (Entry, error) {
	h, err := NormalizeHost(host)
	if err != nil {
		return Entry{}, err
	}
	t.mu.Lock()
	if cur, ok := t.entries[h]; !ok || cur.Backend == "" {
		t.mu.Unlock()
		return Entry{}, ErrNotFound
	}
	tomb := Entry{Host: h, Version: t.nextVersionLocked()}
	err = t.commitLocked([]Entry{tomb})
	t.mu.Unlock()
	if err != nil {
		return Entry{}, err
	}
	t.send([]Entry{tomb})
	return tomb, nil
}

// Get returns the live override of host (normalised first).
func (t *Table) Get(host string) (Entry, bool) {
	h, err := NormalizeHost(host)
	if err != nil {
		return Entry{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[h]
	return e, ok && e.Backend != ""
}

// List returns the live overrides sorted by host.
func (t *Table) List() []Entry {
	t.mu.Lock()
	out := make([]Entry, 0, len(t.entries))
	for _, e := range t.entries {
		if e.Backend != "" {
			out = append(out, e)
		}
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Host, b.Host) })
	return out
}

// Len is the number of live overrides.
func (t *Table) Len() int { return len(t.index.Load().backends) }

// Match returns the override backend for a lookup key (SPEC §2: the key's
// host part, lower-cased, without :port; exact host first, then the nearest
// "*." wildcard) as a one-element slice, or nil. It never locks or allocates.
func (t *Table) Match(key []byte) []string {
	idx := t.index.Load()
	if len(idx.backends) == 0 {
		return nil
	}
	host := hostOf(key)
	if len(host) == 0 || len(host) > MaxHostLen {
		return nil
	}
	// buf[1:1+n] is the lower-cased host; buf[i:1+n] with buf[i] = '*' is
	// the wildcard for the suffix that starts at the host's dot i.
	var buf [MaxHostLen + 1]byte
	n := len(host)
	for i, c := range host {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[1+i] = c
	}
	if exact := buf[1 : 1+n]; idx.mayHave(exact) {
		if b, ok := idx.backends[string(exact)]; ok {
			return b
		}
	}
	if idx.wildDepths == 0 {
		return nil
	}
	// Labels after the dot at i (from 1: a wildcard stands for at least
	// one byte), counted without a dot at 0, which the loop skips.
	labels := 1 + bytes.Count(buf[2:1+n], []byte{'.'})
	for i := 1; i < n; i++ {
		if buf[1+i] != '.' {
			continue
		}
		labels-- // labels after this dot
		if idx.wildDepths&(1<<min(labels, 63)) == 0 {
			continue
		}
		buf[i] = '*' // overwrites a byte before the dot, no longer needed
		if w := buf[i : 1+n]; idx.mayHave(w) {
			if b, ok := idx.backends[string(w)]; ok {
				return b
			}
		}
	}
	return nil
}

// Merge applies entries learnt from other nodes (the greater version wins)
// and returns how many changed the table. They are durable when it returns.
func (t *Table) Merge(entries []Entry) (int, error) {
	newer, err := t.merge(entries)
	return len(newer), err
}

// merge is Merge returning the entries that changed the table.
func (t *Table) merge(entries []Entry) ([]Entry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var newer, refused []Entry
	limit := t.clockLimit()
	for _, e := range entries {
		if e.Version.Clock > limit {
			refused = append(refused, e)
			continue
		}
		t.clock = max(t.clock, e.Version.Clock) // causality: later local writes win
		cur, ok := t.entries[e.Host]
		if ok && !wins(e, cur) {
			continue
		}
		// A tombstone for a host we hold nothing of deletes nothing, and
		// one we would collect at once need not be stored. A tombstone
		// newer than what we hold always applies, however old our clock
		// says it is: a node whose clock is ahead by more than the TTL
		// would otherwise keep the deleted entry forever.
		if !ok && e.Backend == "" && t.expired(e) {
			continue
		}
		newer = append(newer, e)
	}
	if len(refused) > 0 {
		t.refusedLocked(refused)
	}
	if len(newer) == 0 {
		return nil, nil
	}
	// The same host twice in one batch: keep the winner only.
	slices.SortFunc(newer, func(a, b Entry) int {
		if c := strings.Compare(a.Host, b.Host); c != 0 {
			return c
		}
		if wins(a, b) {
			return -1
		}
		return 1
	})
	newer = slices.CompactFunc(newer, func(a, b Entry) bool { return a.Host == b.Host })
	if err := t.commitLocked(newer); err != nil {
		return nil, err
	}
	return newer, nil
}

// wins reports whether a replaces b: the greater version, and for equal
// versions (which one node never issues twice) the greater backend, so that
// every node decides alike.
func wins(a, b Entry) bool {
	if c := cmp.Compare(a.Version.Clock, b.Version.Clock); c != 0 {
		return c > 0
	}
	if c := strings.Compare(a.Version.Node, b.Version.Node); c != 0 {
		return c > 0
	}
	return a.Backend > b.Backend
}

// nextVersionLocked issues the next hybrid-logical-clock version: the wall
// clock, but never at or below anything this node issued or saw.
func (t *Table) nextVersionLocked() Version {
	// Saturating: the clock cannot reach the top (clockLimit), but if it
	// did, a repeated version beats one that wraps to 0.
	t.clock = max(physical(t.opts.now()), min(t.clock, math.MaxUint64-1)+1)
	return Version{Clock: t.clock, Node: t.opts.Node}
}

// clockLimit is the greatest version accepted from another node: this
// node's clock plus MaxClockOffset. Anything beyond would become the clock
// of every later write here (HLC), and a version near 2^64 would leave no
// room for a later one.
func (t *Table) clockLimit() uint64 {
	return physical(t.opts.now().Add(t.opts.MaxClockOffset))
}

// refusedLocked counts and reports entries refused for their version, with
// at most one log line a minute.
func (t *Table) refusedLocked(refused []Entry) {
	t.refused.Add(uint64(len(refused)))
	now := time.Now().UnixNano()
	if last := t.refusedLogged.Load(); last != 0 && now-last < int64(time.Minute) {
		return
	}
	t.refusedLogged.Store(now)
	e := refused[0]
	t.log.Warn("refused overrides from another node: their versions are too far ahead of this node's clock (accepted again once it catches up, by a later full-state exchange)",
		"node", e.Version.Node, "host", e.Host, "version_time", e.Version.Time(),
		"ahead", e.Version.Time().Sub(t.opts.now()).Round(time.Millisecond),
		"max_clock_offset", t.opts.MaxClockOffset, "refused", len(refused))
}

// RefusedVersions counts the entries from other nodes that were not merged
// because their version was more than Options.MaxClockOffset ahead of this
// node's clock.
func (t *Table) RefusedVersions() uint64 { return t.refused.Load() }

// maxMillis is the largest millisecond a Clock holds (48 bits, year 10889).
const maxMillis = 1<<48 - 1

// physical is the Clock reading of wall-clock time w: Unix milliseconds in
// the high 48 bits, the fraction of the millisecond in 1/65,536ths (~15 ns)
// in the low 16. The fraction orders two writes of one millisecond made
// through different nodes by when they were made, where a counter starting
// at 0 each millisecond would make them equal and leave the order to the
// node names. Versions written with a counter compare alike: the layout is
// the same.
func physical(w time.Time) uint64 {
	ms := w.UnixMilli()
	if ms <= 0 {
		return 0
	}
	if ms > maxMillis {
		return maxMillis<<16 | 0xffff
	}
	frac := uint64(w.Nanosecond()%1e6) << 16 / 1e6
	return uint64(ms)<<16 | frac
}

// lastJSONMillis is 9999-12-31T23:59:59.999Z, the last millisecond that
// encoding/json can write.
const lastJSONMillis = 253402300799999

// Time is when the version was written, by the writer's clock, to the
// millisecond. A version past year 9999, which only a broken or hostile
// node writes, reads as the last millisecond of 9999, so that it can still
// be shown.
func (v Version) Time() time.Time {
	return time.UnixMilli(min(int64(v.Clock>>16), lastJSONMillis)).UTC()
}

func (t *Table) expired(e Entry) bool {
	return t.opts.now().Sub(e.Version.Time()) > t.opts.TombstoneTTL
}

// commitLocked writes entries in one bbolt transaction (fsynced), then
// applies them in memory and publishes the index.
func (t *Table) commitLocked(entries []Entry) error {
	// bbolt inserts keys in order cheaply and out of order at a cost that
	// grows with the transaction (it copies nodes): sort first.
	entries = slices.SortedFunc(slices.Values(entries), func(a, b Entry) int { return strings.Compare(a.Host, b.Host) })
	err := t.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOverrides)
		for _, e := range entries {
			if err := b.Put([]byte(e.Host), encodeValue(e)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store overrides: %w", err)
	}
	for _, e := range entries {
		t.entries[e.Host] = e
	}
	t.publishLocked()
	return nil
}

// publishLocked rebuilds the lookup index from entries: O(n) per write,
// paid by writers so that lookups never wait.
func (t *Table) publishLocked() {
	words := 1
	for words*64 < filterBitsPerHost*len(t.entries) {
		words *= 2
	}
	idx := &index{backends: make(map[string][]string, len(t.entries)), filter: make([]uint64, words)}
	var prev map[string][]string
	if old := t.index.Load(); old != nil {
		prev = old.backends
		idx.gen = old.gen + 1
	}
	for h, e := range t.entries {
		if e.Backend == "" {
			continue
		}
		if b, ok := prev[h]; ok && b[0] == e.Backend {
			idx.backends[h] = b // reuse: no allocation per unchanged entry
		} else {
			idx.backends[h] = []string{e.Backend}
		}
		idx.add(h)
	}
	t.index.Store(idx)
	t.state = nil
}

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

// update runs fn in a write transaction and reports its duration to
// Options.OnCommit.
func (t *Table) update(fn func(*bolt.Tx) error) error {
	start := time.Now()
	err := t.db.Update(fn)
	if t.opts.OnCommit != nil {
		t.opts.OnCommit(time.Since(start))
	}
	return err
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

// collectLoop drops tombstones older than TombstoneTTL.
func (t *Table) collectLoop() {
	defer t.wg.Done()
	tick := time.NewTicker(min(time.Hour, t.opts.TombstoneTTL/4))
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-tick.C:
			if n, err := t.collect(); err != nil {
				t.log.Error("cannot collect override tombstones", "err", err)
			} else if n > 0 {
				t.log.Debug("override tombstones collected", "count", n)
			}
		}
	}
}

func (t *Table) collect() (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var old []string
	for h, e := range t.entries {
		if e.Backend == "" && t.expired(e) {
			old = append(old, h)
		}
	}
	if len(old) == 0 {
		return 0, nil
	}
	err := t.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOverrides)
		for _, h := range old {
			if err := b.Delete([]byte(h)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, h := range old {
		delete(t.entries, h)
	}
	t.state = nil
	return len(old), nil
}
