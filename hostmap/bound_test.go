package hostmap

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ringman/store"
)

// syncBuffer is a log sink safe for the table's goroutines.
type syncBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{mu: make(chan struct{}, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

// Versions from other nodes too far ahead of the local clock are refused:
// not merged, not adopted into the clock, counted and logged. Closer to the
// clock than the bound they are merged as before.
func TestMergeRefusesVersionsAheadOfClock(t *testing.T) {
	now := time.Date(2026, 12, 4, 2, 0, 0, 0, time.UTC)
	at := func(d time.Duration) uint64 { return physical(now.Add(d)) }
	for _, tc := range []struct {
		name   string
		clock  uint64
		refuse bool
	}{
		{"max uint64", math.MaxUint64, true},
		{"past year 9999", uint64(lastJSONMillis+1) << 16, true},
		{"year 3000", physical(time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)), true},
		{"2m ahead", at(2 * time.Minute), true},
		{"just past the bound", at(time.Minute + time.Millisecond), true},
		{"30s ahead", at(30 * time.Second), false},
		{"behind", at(-time.Hour), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeClock{t: now}
			logs := newSyncBuffer()
			tb, _ := openTable(t, "n1", func(o *Options) {
				o.now = clk.now
				o.MaxClockOffset = time.Minute
				o.Logger = slog.New(slog.NewTextHandler(logs, nil))
			})
			e := Entry{"a.com", "h:1", Version{Clock: tc.clock, Node: "far"}}
			n, err := tb.Merge([]Entry{e})
			if err != nil {
				t.Fatal(err)
			}
			_, merged := tb.Get("a.com")
			if merged == tc.refuse || (n == 1) == tc.refuse {
				t.Fatalf("merged %d (live %v); want refused %v", n, merged, tc.refuse)
			}
			if got, want := tb.RefusedVersions(), map[bool]uint64{true: 1, false: 0}[tc.refuse]; got != want {
				t.Errorf("RefusedVersions() = %d, want %d", got, want)
			}
			logged := strings.Contains(logs.String(), "node=far")
			if logged != tc.refuse {
				t.Errorf("log names the writer: %v, want %v; logs:\n%s", logged, tc.refuse, logs)
			}
			// A local write: its version is the local clock, plus only
			// what was accepted; it can be shown as JSON.
			local, err := tb.Set("b.com", "h:2")
			if err != nil {
				t.Fatal(err)
			}
			want := max(physical(now), tc.clock+1)
			if tc.refuse {
				want = physical(now)
			}
			if local.Version.Clock != want {
				t.Errorf("next local version %#x, want %#x", local.Version.Clock, want)
			}
			if _, err := json.Marshal(local.Version.Time()); err != nil {
				t.Errorf("local version time: %v", err)
			}
		})
	}
}

// A peer that is merely skewed: its write is refused while it is more than
// the bound ahead, and accepted by a later exchange once the local clock has
// caught up.
func TestRefusedVersionIsAcceptedOnceClockCatchesUp(t *testing.T) {
	now := time.Date(2026, 12, 4, 2, 0, 0, 0, time.UTC)
	clk := &fakeClock{t: now}
	tb, _ := openTable(t, "n1", func(o *Options) { o.now = clk.now; o.MaxClockOffset = time.Minute })
	e := Entry{"a.com", "h:1", Version{Clock: physical(now.Add(5 * time.Minute)), Node: "skewed"}}
	if n, _ := tb.Merge([]Entry{e}); n != 0 {
		t.Fatal("merged a version 5m ahead with a 1m bound")
	}
	clk.set(now.Add(4*time.Minute + time.Second))
	if n, _ := tb.Merge([]Entry{e}); n != 1 {
		t.Fatal("refused again once the clock was within the bound")
	}
	if got, _ := tb.Get("a.com"); got != e {
		t.Errorf("got %+v, want %+v", got, e)
	}
}

// The edges of the clock: nothing wraps or overflows.
func TestClockEdges(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    Version
		want time.Time
	}{
		{"zero", Version{Clock: 0}, time.UnixMilli(0).UTC()},
		{"max uint64", Version{Clock: math.MaxUint64}, time.UnixMilli(lastJSONMillis).UTC()},
		{"year 9999", Version{Clock: lastJSONMillis<<16 | 0xffff}, time.UnixMilli(lastJSONMillis).UTC()},
		{"now", Version{Clock: physical(time.UnixMilli(1764813600123).Add(999_999))}, time.UnixMilli(1764813600123).UTC()},
	} {
		if got := tc.v.Time(); !got.Equal(tc.want) {
			t.Errorf("%s: Time() = %v, want %v", tc.name, got, tc.want)
		}
		if _, err := json.Marshal(tc.v.Time()); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if got := physical(time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC)); got != 0 {
		t.Errorf("physical(1960) = %#x, want 0", got)
	}
	if got := physical(time.Date(20000, 1, 1, 0, 0, 0, 0, time.UTC)); got != math.MaxUint64 {
		t.Errorf("physical(year 20000) = %#x, want the largest clock", got)
	}
	if got := physical(time.UnixMilli(5).Add(999_999)); got != 5<<16|0xffff {
		t.Errorf("physical(5 ms + 999,999 ns) = %#x, want %#x", got, 5<<16|0xffff)
	}
	// A clock at the very top issues the same version rather than 0.
	tb, _ := openTable(t, "n1", nil)
	tb.mu.Lock()
	tb.clock = math.MaxUint64
	v := tb.nextVersionLocked()
	tb.mu.Unlock()
	if v.Clock != math.MaxUint64 {
		t.Errorf("next version after the largest clock: %#x", v.Clock)
	}
}

// Overrides stored before versions were bounded are kept, but a version
// beyond the bound does not become the clock of later writes.
func TestStoredVersionsBeyondBoundAreKept(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bad := Entry{"bad.com", "h:1", Version{Clock: math.MaxUint64, Node: "far"}}
	good := Entry{"good.com", "h:2", Version{Clock: physical(time.Now().Add(-time.Hour)), Node: "n2"}}
	err = st.DB().Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketOverrides)
		if err != nil {
			return err
		}
		for _, e := range []Entry{bad, good} {
			if err := b.Put([]byte(e.Host), encodeValue(e)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := newSyncBuffer()
	tb, err := Open(st.DB(), Options{Node: "n1", Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	for _, want := range []Entry{bad, good} {
		if got, ok := tb.Get(want.Host); !ok || got != want {
			t.Errorf("after open: %+v, %v; want %+v", got, ok, want)
		}
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "bad.com") {
		t.Errorf("no warning naming the entry; logs:\n%s", logs)
	}
	e, err := tb.Set("c.com", "h:3")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(e.Version.Time()); d < -time.Minute || d > time.Minute {
		t.Errorf("a local write after open is dated %v (version %#x): the stored version became the clock", e.Version.Time(), e.Version.Clock)
	}
	// A write of the host replaces the stored entry on this node.
	if e, err := tb.Set("bad.com", "h:4"); err != nil || e.Backend != "h:4" {
		t.Fatalf("Set = %+v, %v", e, err)
	}
	if got, _ := tb.Get("bad.com"); got.Backend != "h:4" {
		t.Errorf("bad.com = %+v after a local write", got)
	}
}
