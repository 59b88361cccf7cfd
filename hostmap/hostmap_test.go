package hostmap

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"ringman/store"
)

func openTable(t *testing.T, node string, edit func(*Options)) (*Table, *store.Store) {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Node: node}
	if edit != nil {
		edit(&opts)
	}
	tb, err := Open(st.DB(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close(); st.Close() })
	return tb, st
}

func waitFor(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not reached within %v: %s", timeout, why)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNormalizeHost(t *testing.T) {
	good := map[string]string{
		"some.host.com":                  "some.host.com",
		"Some.Host.COM.":                 "some.host.com",
		"*.Example.com":                  "*.example.com",
		"localhost":                      "localhost",
		"10.0.0.1":                       "10.0.0.1",
		"a-b.c":                          "a-b.c",
		strings.Repeat("a", 63) + ".com": strings.Repeat("a", 63) + ".com",
	}
	for in, want := range good {
		if got, err := NormalizeHost(in); err != nil || got != want {
			t.Errorf("NormalizeHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := []string{"", ".", "*.", "*", "a..b", "-a.com", "a-.com", "a.*.com", "**.a.com", "a b.com", "a_b.com",
		"ünï.com", "a.com/x", "a.com:80", strings.Repeat("a", 64) + ".com", strings.Repeat("abcdefghi.", 26),
		"\x00.com", "a\r\nb.com"}
	for _, in := range bad {
		_, err := NormalizeHost(in)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "host" {
			t.Errorf("NormalizeHost(%q) = %v; want a host FieldError", in, err)
		}
	}
}

func TestValidateBackend(t *testing.T) {
	for _, in := range []string{"localhost:3000", "10.0.0.5:8080", "[::1]:80", "Backend.Example.com:65535", "a:1"} {
		if err := ValidateBackend(in); err != nil {
			t.Errorf("ValidateBackend(%q) = %v", in, err)
		}
	}
	for _, in := range []string{"", "localhost", ":80", "h:0", "h:65536", "h:x", "h:-1", "a b:80", "h:80:90", "h_x:80", "h: 80"} {
		var fe *FieldError
		if err := ValidateBackend(in); !errors.As(err, &fe) || fe.Field != "backend" {
			t.Errorf("ValidateBackend(%q) = %v; want a backend FieldError", in, err)
		}
	}
}

func TestHostOf(t *testing.T) {
	for key, want := range map[string]string{
		"example.com/a/b":      "example.com",
		"Example.COM:8080/x":   "Example.COM",
		"example.com":          "example.com",
		"/path/only":           "",
		"":                     "",
		"host:99":              "host",
		"a.b/c:d":              "a.b",
		"example.com?q=1/path": "example.com?q=1",
	} {
		if got := string(hostOf([]byte(key))); got != want {
			t.Errorf("hostOf(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestSetGetListDelete(t *testing.T) {
	tb, _ := openTable(t, "n1", nil)
	e, err := tb.Set("Some.Host.com", "localhost:3000")
	if err != nil || e.Host != "some.host.com" || e.Backend != "localhost:3000" || e.Version.Node != "n1" {
		t.Fatalf("Set = %+v, %v", e, err)
	}
	if got, ok := tb.Get("SOME.host.com"); !ok || got != e {
		t.Fatalf("Get = %+v, %v", got, ok)
	}
	e2, _ := tb.Set("some.host.com", "localhost:3001")
	if !wins(e2, e) {
		t.Errorf("update version %v does not win over %v", e2.Version, e.Version)
	}
	tb.Set("a.com", "10.0.0.1:80")
	if l := tb.List(); len(l) != 2 || l[0].Host != "a.com" || l[1].Backend != "localhost:3001" || tb.Len() != 2 {
		t.Fatalf("List = %+v", l)
	}
	if _, err := tb.Delete("some.host.com"); err != nil {
		t.Fatal(err)
	}
	if _, ok := tb.Get("some.host.com"); ok || tb.Len() != 1 {
		t.Error("deleted entry still there")
	}
	if _, err := tb.Delete("some.host.com"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
	if _, err := tb.Delete("never.com"); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete of unknown: %v", err)
	}
}

func TestSetManyIsAllOrNothing(t *testing.T) {
	tb, _ := openTable(t, "n1", nil)
	_, err := tb.SetMany([]Pair{{"a.com", "h:1"}, {"b.com", "h:2"}, {"c.com", "no-port"}})
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "backend" || !strings.Contains(err.Error(), "entry 2") {
		t.Fatalf("err = %v; want entry 2's backend named", err)
	}
	if tb.Len() != 0 {
		t.Fatalf("a failed bulk set stored %d entries", tb.Len())
	}
	if _, err := tb.Set("bad host", "h:1"); !errors.As(err, &fe) || fe.Field != "host" {
		t.Fatalf("Set bad host: %v", err)
	}
	out, err := tb.SetMany([]Pair{{"a.com", "h:1"}, {"b.com", "h:2"}})
	if err != nil || len(out) != 2 || tb.Len() != 2 {
		t.Fatalf("SetMany = %v, %v", out, err)
	}
}

func TestMatch(t *testing.T) {
	tb, _ := openTable(t, "n1", nil)
	if tb.Match([]byte("a.com/x")) != nil {
		t.Fatal("empty table matched")
	}
	tb.SetMany([]Pair{
		{"exact.example.com", "10.0.0.1:1"},
		{"*.example.com", "10.0.0.2:2"},
		{"*.b.example.com", "10.0.0.3:3"},
		{"plain.org", "10.0.0.4:4"},
	})
	for key, want := range map[string]string{
		"exact.example.com/img/1.jpg": "10.0.0.1:1",
		"EXACT.Example.com:8080/x":    "10.0.0.1:1",
		"other.example.com/x":         "10.0.0.2:2",
		"x.y.example.com/":            "10.0.0.2:2",
		"a.b.example.com/x":           "10.0.0.3:3",
		"deep.a.b.example.com":        "10.0.0.3:3",
		"b.example.com/x":             "10.0.0.2:2",
		"example.com/x":               "",
		"plain.org":                   "10.0.0.4:4",
		"sub.plain.org/x":             "",
		"/exact.example.com":          "",
		"":                            "",
		strings.Repeat("a", 300) + ".example.com/x": "",
	} {
		got := ""
		if m := tb.Match([]byte(key)); m != nil {
			got = m[0]
		}
		if got != want {
			t.Errorf("Match(%q) = %q, want %q", key, got, want)
		}
	}
	keys := [][]byte{[]byte("Other.Example.com:80/path"), []byte("none.net/x"), []byte("/x")}
	for _, k := range keys {
		if a := testing.AllocsPerRun(100, func() { tb.Match(k) }); a != 0 {
			t.Errorf("Match(%q) allocates %v", k, a)
		}
	}
}

func TestPersistsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	tb, _ := Open(st.DB(), Options{Node: "n1"})
	tb.Set("a.com", "h:1")
	tb.Set("b.com", "h:2")
	tomb, _ := tb.Delete("b.com")
	tb.Close()
	st.Close()

	st, err = store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tb, err = Open(st.DB(), Options{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	if l := tb.List(); len(l) != 1 || l[0].Host != "a.com" {
		t.Fatalf("after reopen: %+v", l)
	}
	// The tombstone survives too, and the clock continues past it.
	if n, _ := tb.Merge([]Entry{{Host: "b.com", Backend: "h:9", Version: Version{Clock: tomb.Version.Clock - 1, Node: "z"}}}); n != 0 {
		t.Error("an older set beat a stored tombstone after reopen")
	}
	if e, _ := tb.Set("c.com", "h:3"); e.Version.Clock <= tomb.Version.Clock {
		t.Errorf("clock went back after reopen: %d <= %d", e.Version.Clock, tomb.Version.Clock)
	}
}

func TestMergeLastWriterWins(t *testing.T) {
	tb, _ := openTable(t, "n1", nil)
	base := uint64(time.Now().UnixMilli())
	v := func(c uint64, node string) Version { return Version{Clock: (base + c) << 16, Node: node} }
	steps := []struct {
		e    Entry
		want string // backend of a.com after the step ("" = none)
	}{
		{Entry{"a.com", "h:1", v(10, "x")}, "h:1"},
		{Entry{"a.com", "h:0", v(9, "x")}, "h:1"},  // older: ignored
		{Entry{"a.com", "h:2", v(10, "y")}, "h:2"}, // same clock, greater node wins
		{Entry{"a.com", "", v(11, "a")}, ""},       // tombstone wins
		{Entry{"a.com", "h:3", v(10, "z")}, ""},    // older set cannot resurrect
		{Entry{"a.com", "h:4", v(12, "a")}, "h:4"}, // newer set does
	}
	for i, s := range steps {
		tb.Merge([]Entry{s.e})
		got, _ := tb.Get("a.com")
		if got.Backend != s.want {
			t.Fatalf("step %d: backend %q, want %q", i, got.Backend, s.want)
		}
	}
	// A local write after seeing a version from a clock ahead of ours (within
	// MaxClockOffset) still wins (HLC).
	future := Entry{"b.com", "h:1", Version{Clock: uint64(time.Now().Add(30*time.Second).UnixMilli()) << 16, Node: "skewed"}}
	tb.Merge([]Entry{future})
	if e, _ := tb.Set("b.com", "h:2"); !wins(e, future) {
		t.Errorf("local write %v lost to the future write it saw %v", e.Version, future.Version)
	}
}

// Any order and grouping of the same changes gives the same table.
func TestMergeOrderIndependent(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var changes []Entry
	for i := range 300 {
		host := fmt.Sprintf("h%d.com", rng.IntN(40))
		backend := fmt.Sprintf("10.0.0.%d:80", rng.IntN(200)+1)
		if rng.IntN(4) == 0 {
			backend = ""
		}
		clock := uint64(time.Now().UnixMilli()-int64(rng.IntN(1000))) << 16
		changes = append(changes, Entry{host, backend, Version{clock + uint64(i%3), fmt.Sprintf("n%d", rng.IntN(3))}})
	}
	var want []byte
	for round := range 20 {
		tb, _ := openTable(t, "r", nil)
		order := slices.Clone(changes)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for len(order) > 0 {
			k := min(len(order), 1+rng.IntN(40))
			if _, err := tb.Merge(order[:k]); err != nil {
				t.Fatal(err)
			}
			order = order[k:]
		}
		got := []byte(fmt.Sprint(tb.List(), tombstones(tb)))
		if round == 0 {
			want = got
		} else if string(got) != string(want) {
			t.Fatalf("round %d: table differs:\n%s\nwant\n%s", round, got, want)
		}
	}
}

func tombstones(tb *Table) []Entry {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var out []Entry
	for _, e := range tb.entries {
		if e.Backend == "" {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Host, b.Host) })
	return out
}

func TestTombstonesAreCollected(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	tb, _ := openTable(t, "n1", func(o *Options) { o.TombstoneTTL = time.Hour; o.now = clock })
	tb.Set("a.com", "h:1")
	tomb, _ := tb.Delete("a.com")
	if n, _ := tb.collect(); n != 0 {
		t.Fatal("collected a fresh tombstone")
	}
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	if n, err := tb.collect(); n != 1 || err != nil {
		t.Fatalf("collect = %d, %v; want 1", n, err)
	}
	// A tombstone that old arriving from elsewhere is not stored again.
	if n, _ := tb.Merge([]Entry{tomb}); n != 0 || len(tombstones(tb)) != 0 {
		t.Error("an expired tombstone was merged")
	}
}

func TestStateExchange(t *testing.T) {
	a, _ := openTable(t, "a", nil)
	b, _ := openTable(t, "b", nil)
	var sent [][]byte
	var mu sync.Mutex
	a.SetBroadcast(func(key string, msg []byte) { mu.Lock(); sent = append(sent, msg); mu.Unlock() })
	a.Set("x.com", "h:1")
	a.Set("y.com", "h:2")
	a.Delete("y.com")
	b.Set("z.com", "h:3")

	mu.Lock()
	if len(sent) != 3 {
		t.Fatalf("%d broadcasts, want 3", len(sent))
	}
	for _, m := range sent {
		b.MergeMessage(m)
	}
	mu.Unlock()
	a.MergeState(b.LocalState())
	same := func() (bool, string) {
		la, lb := fmt.Sprint(a.List(), tombstones(a)), fmt.Sprint(b.List(), tombstones(b))
		return la == lb && a.Len() == 2, "a: " + la + " b: " + lb
	}
	waitFor(t, 5*time.Second, same)

	// Garbage from the network is ignored.
	b.MergeMessage([]byte{1, 200, 1, 2, 3})
	b.MergeState(nil)
	b.MergeMessage(encodeEntries(nil, []Entry{{Host: "BAD HOST", Backend: "h:1", Version: Version{1, "x"}}}))
	waitFor(t, 5*time.Second, same)
}

// A bulk change is sent in a few large direct messages that hold it all; a
// receiver merges them and relays nothing. A small change is gossiped entry
// by entry and relayed by the receivers it is new to.
func TestBulkIsSentInDirectChunks(t *testing.T) {
	type msg struct {
		key string
		buf []byte
	}
	capture := func(tb *Table) func() []msg {
		var mu sync.Mutex
		var sent []msg
		tb.SetBroadcast(func(key string, buf []byte) { mu.Lock(); sent = append(sent, msg{key, buf}); mu.Unlock() })
		return func() []msg { mu.Lock(); defer mu.Unlock(); return slices.Clone(sent) }
	}
	for _, tc := range []struct {
		entries, messages int
	}{
		{broadcastMax + 1, 1},
		{bulkChunk, 1},
		{bulkChunk + 1, 2},
		{16500, 5},
	} {
		t.Run(fmt.Sprint(tc.entries), func(t *testing.T) {
			a, _ := openTable(t, "a", nil)
			b, _ := openTable(t, "b", nil)
			sentA, sentB := capture(a), capture(b)
			pairs := make([]Pair, tc.entries)
			for i := range pairs {
				pairs[i] = Pair{fmt.Sprintf("h%d.com", i), "h:1"}
			}
			if _, err := a.SetMany(pairs); err != nil {
				t.Fatal(err)
			}
			msgs := sentA()
			if len(msgs) != tc.messages {
				t.Fatalf("%d messages for %d entries, want %d", len(msgs), tc.entries, tc.messages)
			}
			total := 0
			for i, m := range msgs {
				got, err := decodeEntries(m.buf)
				if err != nil || m.buf[0] != formatDirect || m.key != "" {
					t.Fatalf("message %d: format %d, key %q, %v; want format %d, no key", i, m.buf[0], m.key, err, formatDirect)
				}
				// Too large for a gossip packet (1,400 bytes at most), so
				// the gossip layer sends it to every member.
				if len(got) <= broadcastMax || len(m.buf) < 1400 {
					t.Errorf("message %d: %d entries in %d bytes: small enough to be gossiped", i, len(got), len(m.buf))
				}
				total += len(got)
				b.MergeMessage(m.buf)
			}
			if total != tc.entries {
				t.Errorf("the messages hold %d entries, want %d", total, tc.entries)
			}
			waitFor(t, 10*time.Second, func() (bool, string) {
				return b.Len() == tc.entries, fmt.Sprintf("b has %d of %d entries", b.Len(), tc.entries)
			})
			if n := len(sentB()); n != 0 {
				t.Errorf("b relayed %d messages of a direct bulk change", n)
			}
			// A small change in the old format is still merged, and
			// relayed.
			e := Entry{"small.com", "h:2", Version{physical(time.Now()), "c"}}
			b.MergeMessage(encodeEntries(nil, []Entry{e}))
			waitFor(t, 10*time.Second, func() (bool, string) {
				return len(sentB()) == 1, fmt.Sprintf("b relayed %d messages, want 1", len(sentB()))
			})
			if m := sentB()[0]; m.key != "override:small.com" || m.buf[0] != formatEntries {
				t.Errorf("relay: key %q, format %d", m.key, m.buf[0])
			}
		})
	}
}

func TestDecodeRejectsGarbage(t *testing.T) {
	valid := encodeEntries(nil, []Entry{{"a.com", "h:1", Version{5, "n"}}})
	if _, err := decodeEntries(valid); err != nil {
		t.Fatal(err)
	}
	for name, buf := range map[string][]byte{
		"empty":      nil,
		"format":     {9, 0},
		"count":      {1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"truncated":  valid[:len(valid)-1],
		"trailing":   append(slices.Clone(valid), 0),
		"no version": encodeEntries(nil, []Entry{{"a.com", "h:1", Version{}}}),
		"bad host":   encodeEntries(nil, []Entry{{"A.com", "h:1", Version{5, "n"}}}),
		"bad back":   encodeEntries(nil, []Entry{{"a.com", "h", Version{5, "n"}}}),
	} {
		if _, err := decodeEntries(buf); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func FuzzDecodeEntries(f *testing.F) {
	f.Add(encodeEntries(nil, []Entry{{"a.com", "h:1", Version{5, "n"}}, {"*.b.com", "", Version{7, "m"}}}))
	f.Add([]byte{1, 1, 5, 'a', '.', 'c', 'o', 'm'})
	f.Fuzz(func(t *testing.T, buf []byte) {
		entries, err := decodeEntries(buf)
		if err != nil {
			return
		}
		for _, e := range entries {
			if checkEntry(e) != nil {
				t.Fatalf("decoded an invalid entry %+v", e)
			}
		}
		again, err := decodeEntries(encodeEntries(nil, entries))
		if err != nil || !slices.Equal(again, entries) {
			t.Fatalf("round trip: %v, %v != %v", err, again, entries)
		}
	})
}

func FuzzMatch(f *testing.F) {
	for _, k := range []string{"a.example.com/x", "EXAMPLE.com:80/", "/x", "", ".", "*.example.com", "a..example.com"} {
		f.Add([]byte(k))
	}
	st, err := store.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	tb, err := Open(st.DB(), Options{Node: "f"})
	if err != nil {
		f.Fatal(err)
	}
	defer tb.Close()
	tb.SetMany([]Pair{{"*.example.com", "h:1"}, {"a.example.com", "h:2"}})
	f.Fuzz(func(t *testing.T, key []byte) {
		m := tb.Match(key)
		if m != nil && m[0] != "h:1" && m[0] != "h:2" {
			t.Fatalf("Match(%q) = %v", key, m)
		}
	})
}

// Two tables with the same entries send identical state, whatever order
// they learnt them in: a converged push/pull costs one comparison.
func TestLocalStateIsCanonical(t *testing.T) {
	a, _ := openTable(t, "a", nil)
	b, _ := openTable(t, "b", nil)
	var entries []Entry
	for i := range 200 {
		e, err := a.Set(fmt.Sprintf("h%03d.com", i), "h:1")
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	slices.Reverse(entries)
	if _, err := b.Merge(entries); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.LocalState(), b.LocalState()) {
		t.Fatal("same table, different LocalState bytes")
	}
}
