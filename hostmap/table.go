package hostmap

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bucketOverrides = []byte("overrides")

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
	// wildCounts counts the live overrides by wildLabels, for
	// index.wildDepths.
	wildCounts [64]int
	// tailCounts counts the live wildcards that set each bit of
	// index.tails (nil until the first); wildShort counts those with no
	// tail.
	tailCounts []int32
	wildShort  int

	broadcast atomic.Pointer[func(key string, msg []byte)]
	onPublish atomic.Pointer[func()]
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
	t.publishLocked(nil)
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

// SetOnPublish makes fn be called after each change of what Match answers
// (a local write or a merge from another node), so that a consumer of Live
// (a table file writer) can look at once rather than poll. It is called with
// the table's write lock held and must not block.
func (t *Table) SetOnPublish(fn func()) {
	t.onPublish.Store(&fn)
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
func (t *Table) Len() int { return t.index.Load().count }
