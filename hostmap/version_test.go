package hostmap

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for Options.now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// Two writes in the same millisecond on two nodes, the later one on the node
// whose name loses the tie-break: the later write wins everywhere.
func TestLaterWriteInSameMillisecondWins(t *testing.T) {
	base := time.Date(2026, 12, 4, 2, 0, 0, 0, time.UTC).Add(123 * time.Millisecond)
	for _, tc := range []struct {
		name          string
		first, second time.Duration // offsets from base within one millisecond
	}{
		{"100us apart", 100 * time.Microsecond, 200 * time.Microsecond},
		{"1us apart", 500 * time.Microsecond, 501 * time.Microsecond},
		{"ms edges", 0, 999 * time.Microsecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c1, c2 := &fakeClock{t: base.Add(tc.second)}, &fakeClock{t: base.Add(tc.first)}
			n1, _ := openTable(t, "n1", func(o *Options) { o.now = c1.now })
			n2, _ := openTable(t, "n2", func(o *Options) { o.now = c2.now })
			older, err := n2.Set("o.test", "1.1.1.1:1")
			if err != nil {
				t.Fatal(err)
			}
			later, err := n1.Set("o.test", "2.2.2.2:2")
			if err != nil {
				t.Fatal(err)
			}
			n1.Merge([]Entry{older})
			n2.Merge([]Entry{later})
			for _, tb := range []*Table{n1, n2} {
				if e, _ := tb.Get("o.test"); e.Backend != "2.2.2.2:2" {
					t.Errorf("%s keeps %q (versions: n2 %#x, n1 %#x); want the later write 2.2.2.2:2",
						tb.opts.Node, e.Backend, older.Version.Clock, later.Version.Clock)
				}
			}
			if got := later.Version.Time(); !got.Equal(base) {
				t.Errorf("Time() = %v, want the millisecond %v", got, base)
			}
		})
	}
}

// The acknowledged-write race on one machine's clock: a write on n2, then a
// write on n1 before n1 has heard of it (gossip still in flight), then the
// exchange both ways. The later write wins every round.
func TestLaterWriteWinsOnRealClock(t *testing.T) {
	rounds := 1000
	if testing.Short() {
		rounds = 100
	}
	n1, _ := openTable(t, "n1", nil)
	n2, _ := openTable(t, "n2", nil)
	lost := 0
	var first string
	for i := range rounds {
		host := fmt.Sprintf("o%d.test", i)
		older, err := n2.Set(host, "1.1.1.1:1")
		if err != nil {
			t.Fatal(err)
		}
		later, err := n1.Set(host, "2.2.2.2:2")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n1.Merge([]Entry{older}); err != nil {
			t.Fatal(err)
		}
		if _, err := n2.Merge([]Entry{later}); err != nil {
			t.Fatal(err)
		}
		e1, _ := n1.Get(host)
		e2, _ := n2.Get(host)
		if e1.Backend != "2.2.2.2:2" || e2.Backend != "2.2.2.2:2" {
			lost++
			if first == "" {
				first = fmt.Sprintf("%s: n1 has %q, n2 has %q (versions: n2 %#x, n1 %#x)",
					host, e1.Backend, e2.Backend, older.Version.Clock, later.Version.Clock)
			}
		}
	}
	if lost > 0 {
		t.Errorf("the later write lost in %d of %d rounds; first: %s", lost, rounds, first)
	}
}

// A node whose clock is ahead by more than the tombstone TTL still applies
// a delete made elsewhere: a tombstone newer than what it holds always
// replaces it; expiry only decides when it is collected.
func TestTombstoneAppliesOnNodeAheadByMoreThanTTL(t *testing.T) {
	now := time.Now()
	ahead := &fakeClock{t: now.Add(3 * time.Hour)}
	skewed, _ := openTable(t, "skewed", func(o *Options) { o.TombstoneTTL = time.Hour; o.now = ahead.now })
	peer, _ := openTable(t, "peer", func(o *Options) { o.TombstoneTTL = time.Hour })

	set, err := peer.Set("a.com", "h:1")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := skewed.Merge([]Entry{set}); n != 1 || err != nil {
		t.Fatalf("merge of the set = %d, %v; want 1", n, err)
	}
	tomb, err := peer.Delete("a.com")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := skewed.Merge([]Entry{tomb}); n != 1 || err != nil {
		t.Errorf("merge of the tombstone = %d, %v; want 1", n, err)
	}
	if e, ok := skewed.Get("a.com"); ok {
		t.Errorf("the deleted override is still live on the node whose clock is ahead: %+v", e)
	}
	// By its clock the tombstone is old: it is collected, and arriving
	// again (the peer still has it) it is not stored again.
	if n, err := skewed.collect(); n != 1 || err != nil {
		t.Errorf("collect = %d, %v; want 1", n, err)
	}
	if n, _ := skewed.Merge([]Entry{tomb}); n != 0 || len(tombstones(skewed)) != 0 {
		t.Errorf("an expired tombstone for a host without an entry was stored again (merged %d)", n)
	}
	if _, ok := skewed.Get("a.com"); ok {
		t.Error("the override came back")
	}
}
