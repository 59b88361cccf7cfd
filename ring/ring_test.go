package ring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// tableHash is an exact Hasher for rings small enough to place by hand.
//
//   - An 8-byte input is a partition id as consistent encodes it (little-endian
//     uint64 p); it hashes to 10*p, so partition p sits at position 10p.
//   - Any other input is looked up in the table (the virtual points
//     "<i>:<name>"), or else parsed as a decimal number: lookup keys are
//     decimal strings, so key "23" hashes to 23 and lands in partition 23 % P.
//   - Anything else panics, so a test that hashes something unexpected fails
//     loudly.
type tableHash map[string]uint64

func (h tableHash) Sum64(b []byte) uint64 {
	if len(b) == 8 {
		return 10 * binary.LittleEndian.Uint64(b)
	}
	if v, ok := h[string(b)]; ok {
		return v
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		panic(fmt.Sprintf("tableHash: unexpected input %q", b))
	}
	return n
}

// handHash places three instances, two virtual points each, on a ring whose
// ten partitions sit at 0, 10, ..., 90:
//
//	position:  1   55   72   75   85   88
//	instance:  a   a    b    b    c    c
var handHash = tableHash{
	"0:a": 1, "1:a": 55,
	"0:b": 72, "1:b": 75,
	"0:c": 85, "1:c": 88,
}

func handSettings(load float64) Settings {
	return Settings{Partitions: 10, Load: load, ReplicationFactor: 2, Hasher: handHash}
}

// TestExactPlacement checks owners and candidates against placements worked
// out by hand from consistent v1.0.0's algorithm: partition p goes to the
// first virtual point at or after 10p (wrapping to the start) whose instance
// owns fewer than ceil(P/M*Load) partitions; candidates are the owner and
// then the distinct instances met walking clockwise from 10p.
func TestExactPlacement(t *testing.T) {
	tests := []struct {
		name       string
		load       float64
		instances  []string
		owners     string   // owner of partition p is owners[p]
		candidates []string // candidates of partition p, one letter each
	}{
		{
			// Capacity ceil(10/3*1.25) = 5. a fills up at partition 4, so 5
			// goes on to b; 9 wraps to a (full), then b.
			name: "abc load 1.25", load: 1.25, instances: []string{"a", "b", "c"},
			owners:     "aaaaabbbcb",
			candidates: []string{"abc", "abc", "abc", "abc", "abc", "bac", "bca", "bca", "cab", "bac"},
		},
		{
			// Capacity ceil(10/3) = 4: a fills up at 3, b at 7, 9 wraps past
			// a and b to c.
			name: "abc load 1", load: 1, instances: []string{"c", "a", "b"},
			owners:     "aaaabbbbcc",
			candidates: []string{"abc", "abc", "abc", "abc", "bac", "bac", "bca", "bca", "cab", "cab"},
		},
		{
			// Capacity ceil(10/2*1.25) = 7: b takes 0..6, c the rest.
			name: "bc load 1.25", load: 1.25, instances: []string{"b", "c"},
			owners:     "bbbbbbbccc",
			candidates: []string{"bc", "bc", "bc", "bc", "bc", "bc", "bc", "cb", "cb", "cb"},
		},
		{
			name: "a alone", load: 1.25, instances: []string{"a"},
			owners:     "aaaaaaaaaa",
			candidates: []string{"a", "a", "a", "a", "a", "a", "a", "a", "a", "a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New(handSettings(tt.load), tt.instances)
			if err != nil {
				t.Fatal(err)
			}
			checkHandRing(t, r, tt.owners, tt.candidates)
			// The library itself, as a check on the hand placement.
			c := consistent.New(members(tt.instances), consistent.Config{
				Hasher: handHash, PartitionCount: 10, ReplicationFactor: 2, Load: tt.load,
			})
			for p := range 10 {
				if got := c.GetPartitionOwner(p).String(); got != string(tt.owners[p]) {
					t.Errorf("consistent puts partition %d on %s, the hand placement on %c", p, got, tt.owners[p])
				}
			}
		})
	}
}

// checkHandRing asserts a ring built with handHash against a hand placement.
func checkHandRing(t *testing.T, r *Ring, owners string, candidates []string) {
	t.Helper()
	if r.Partitions() != 10 {
		t.Fatalf("Partitions() = %d, want 10", r.Partitions())
	}
	// Keys p and p+10 both land in partition p.
	for p := range 10 {
		for _, key := range []string{strconv.Itoa(p), strconv.Itoa(p + 10)} {
			want := string(owners[p])
			if got, ok := r.Owner(key); !ok || got != want {
				t.Errorf("Owner(%q) = %q, %v; want %q", key, got, ok, want)
			}
			if got, ok := r.OwnerBytes([]byte(key)); !ok || got != want {
				t.Errorf("OwnerBytes(%q) = %q, %v; want %q", key, got, ok, want)
			}
			wantC := strings.Split(candidates[p], "")
			if got := r.Candidates(key, MaxCandidates); !slices.Equal(got, wantC) {
				t.Errorf("Candidates(%q) = %q, want %q", key, got, wantC)
			}
			if got := r.CandidatesBytes([]byte(key), 2); !slices.Equal(got, wantC[:min(2, len(wantC))]) {
				t.Errorf("CandidatesBytes(%q, 2) = %q, want %q", key, got, wantC[:min(2, len(wantC))])
			}
		}
	}
	wantOwned := map[string]int{}
	for _, o := range owners {
		wantOwned[string(o)]++
	}
	if got := r.Owned(); !mapsEqual(got, wantOwned) {
		t.Errorf("Owned() = %v, want %v", got, wantOwned)
	}
}

// TestExactPlacementBuilder reaches the hand placements through a Builder's
// incremental path.
func TestExactPlacementBuilder(t *testing.T) {
	b, err := NewBuilder(handSettings(1.25))
	if err != nil {
		t.Fatal(err)
	}
	abcOwners := "aaaaabbbcb"
	abcCand := []string{"abc", "abc", "abc", "abc", "abc", "bac", "bca", "bca", "cab", "bac"}
	steps := []struct {
		instances  []string
		owners     string
		candidates []string
	}{
		{[]string{"b"}, "bbbbbbbbbb", strings.Split("bbbbbbbbbb", "")},
		{[]string{"b", "c"}, "bbbbbbbccc", []string{"bc", "bc", "bc", "bc", "bc", "bc", "bc", "cb", "cb", "cb"}},
		{[]string{"a", "b", "c"}, abcOwners, abcCand},
		{[]string{"b", "c"}, "bbbbbbbccc", []string{"bc", "bc", "bc", "bc", "bc", "bc", "bc", "cb", "cb", "cb"}},
		{[]string{"c", "b", "a", "a"}, abcOwners, abcCand},
		{nil, "", nil},
		{[]string{"a", "b", "c"}, abcOwners, abcCand},
	}
	for i, s := range steps {
		r, err := b.Build(s.instances)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if s.owners == "" {
			if r.Len() != 0 {
				t.Fatalf("step %d: Len() = %d, want 0", i, r.Len())
			}
			continue
		}
		t.Run(fmt.Sprint("step", i), func(t *testing.T) { checkHandRing(t, r, s.owners, s.candidates) })
	}
}

type member string

func (m member) String() string { return string(m) }

func members(names []string) []consistent.Member {
	out := make([]consistent.Member, len(names))
	for i, n := range names {
		out[i] = member(n)
	}
	return out
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// instanceNames returns n distinct, realistic instance names.
func instanceNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.1.%d.%d:8080", i/250, i%250+1)
	}
	return out
}

// Rings with default settings, shared between tests: building 1,000
// instances from scratch costs about a second.
var (
	defaultRingsMu sync.Mutex
	defaultRings   = map[int]*Ring{}
)

func defaultRing(t testing.TB, n int) *Ring {
	t.Helper()
	defaultRingsMu.Lock()
	defer defaultRingsMu.Unlock()
	if r, ok := defaultRings[n]; ok {
		return r
	}
	r, err := New(DefaultSettings(), instanceNames(n))
	if err != nil {
		t.Fatal(err)
	}
	defaultRings[n] = r
	return r
}

// TestOwnerMatchesConsistent holds the Builder's placement to the library
// it reimplements: every partition's owner, and Owner against LocateKey, over
// sets where the load bound never binds and sets where it binds all the time
// (Load 1, a few partitions per instance).
func TestOwnerMatchesConsistent(t *testing.T) {
	tests := []struct {
		instances, partitions, replication int
		load                               float64
	}{
		{1, 271, 20, DefaultLoad},
		{3, DefaultPartitions, DefaultReplicationFactor, DefaultLoad},
		{5, 4093, 20, DefaultLoad},
		{37, 4093, DefaultReplicationFactor, DefaultLoad},
		{37, 4093, 20, 1},
		{64, 257, 7, 1},
		{100, 271, 1, 1.01},
		{200, 1021, 3, MaxLoad},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("n%d/p%d/r%d/l%g", tt.instances, tt.partitions, tt.replication, tt.load)
		t.Run(name, func(t *testing.T) {
			s := Settings{Partitions: tt.partitions, Load: tt.load, ReplicationFactor: tt.replication}
			names := instanceNames(tt.instances)
			r, err := New(s, names)
			if err != nil {
				t.Fatal(err)
			}
			c := consistent.New(members(names), consistent.Config{
				Hasher: xxHasher{}, PartitionCount: s.Partitions, ReplicationFactor: s.ReplicationFactor, Load: s.Load,
			})
			for p := range s.Partitions {
				if got, want := ownerAt(r, p), c.GetPartitionOwner(p).String(); got != want {
					t.Fatalf("partition %d: table owner %s, consistent %s", p, got, want)
				}
			}
			for i := range 2000 {
				key := fmt.Sprintf("/objects/%d", i)
				got, _ := r.Owner(key)
				if want := c.LocateKey([]byte(key)).String(); got != want {
					t.Fatalf("Owner(%q) = %s, LocateKey says %s", key, got, want)
				}
			}
		})
	}
}

func TestCandidates(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 8, 9, 50} {
		t.Run(fmt.Sprint("instances=", n), func(t *testing.T) {
			s := Settings{Partitions: 1021, Load: DefaultLoad, ReplicationFactor: DefaultReplicationFactor}
			r, err := New(s, instanceNames(n))
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2000 {
				key := fmt.Sprintf("key-%d", i)
				owner, ok := r.Owner(key)
				if !ok {
					t.Fatalf("Owner(%q) found nothing", key)
				}
				for _, want := range []int{-1, 0, 1, 2, 5, MaxCandidates, MaxCandidates + 1, 100} {
					got := r.Candidates(key, want)
					if want <= 0 {
						if got != nil {
							t.Fatalf("Candidates(%q, %d) = %q, want nil", key, want, got)
						}
						continue
					}
					if wantLen := min(want, n, MaxCandidates); len(got) != wantLen {
						t.Fatalf("Candidates(%q, %d) has %d instances, want %d", key, want, len(got), wantLen)
					}
					if got[0] != owner {
						t.Fatalf("Candidates(%q, %d)[0] = %s, Owner = %s", key, want, got[0], owner)
					}
					seen := map[string]bool{}
					for _, c := range got {
						if seen[c] {
							t.Fatalf("Candidates(%q, %d) = %q repeats %s", key, want, got, c)
						}
						seen[c] = true
					}
					if gotB := r.CandidatesBytes([]byte(key), want); !slices.Equal(gotB, got) {
						t.Fatalf("CandidatesBytes(%q, %d) = %q, Candidates = %q", key, want, gotB, got)
					}
					// A shorter list is a prefix of a longer one.
					if all := r.Candidates(key, MaxCandidates); !slices.Equal(all[:len(got)], got) {
						t.Fatalf("Candidates(%q, %d) = %q is not a prefix of %q", key, want, got, all)
					}
				}
				if cap(r.Candidates(key, 1)) != 1 {
					// Appending to the shared result must not write into the table.
					t.Fatalf("Candidates(%q, 1) has capacity %d, want 1", key, cap(r.Candidates(key, 1)))
				}
			}
		})
	}
}

func TestSettingsValidate(t *testing.T) {
	def := DefaultSettings()
	with := func(f func(*Settings)) Settings {
		s := def
		f(&s)
		return s
	}
	tests := []struct {
		name  string
		s     Settings
		field string // "" = valid
	}{
		{"default", def, ""},
		{"smallest", Settings{Partitions: 1, Load: 1, ReplicationFactor: 1}, ""},
		{"largest", Settings{Partitions: MaxPartitions, Load: MaxLoad, ReplicationFactor: MaxReplicationFactor}, ""},
		{"custom hasher", with(func(s *Settings) { s.Hasher = handHash }), ""},
		{"zero value", Settings{}, "partitions"},
		{"partitions 0", with(func(s *Settings) { s.Partitions = 0 }), "partitions"},
		{"partitions -1", with(func(s *Settings) { s.Partitions = -1 }), "partitions"},
		{"partitions too many", with(func(s *Settings) { s.Partitions = MaxPartitions + 1 }), "partitions"},
		{"load 0", with(func(s *Settings) { s.Load = 0 }), "load"},
		{"load 0.5", with(func(s *Settings) { s.Load = 0.5 }), "load"},
		{"load just below 1", with(func(s *Settings) { s.Load = math.Nextafter(1, 0) }), "load"},
		{"load NaN", with(func(s *Settings) { s.Load = math.NaN() }), "load"},
		{"load +Inf", with(func(s *Settings) { s.Load = math.Inf(1) }), "load"},
		{"load -Inf", with(func(s *Settings) { s.Load = math.Inf(-1) }), "load"},
		{"load too big", with(func(s *Settings) { s.Load = MaxLoad + 1 }), "load"},
		{"replication 0", with(func(s *Settings) { s.ReplicationFactor = 0 }), "replication"},
		{"replication -1", with(func(s *Settings) { s.ReplicationFactor = -1 }), "replication"},
		{"replication too big", with(func(s *Settings) { s.ReplicationFactor = MaxReplicationFactor + 1 }), "replication"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Validate()
			_, berr := NewBuilder(tt.s)
			var nerr error
			// (Not worth building the largest ring; handHash knows only its own points.)
			if tt.field != "" || tt.s.Partitions <= DefaultPartitions && tt.s.Hasher == nil {
				_, nerr = New(tt.s, []string{"a"})
			}
			if tt.field == "" {
				if err != nil || berr != nil {
					t.Fatalf("Validate() = %v, NewBuilder: %v; want no error", err, berr)
				}
				if nerr != nil {
					t.Fatalf("New: %v", nerr)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error about %s", tt.field)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("Validate() = %q does not mention %q", err, tt.field)
			}
			if berr == nil || nerr == nil {
				t.Errorf("NewBuilder: %v, New: %v; want errors", berr, nerr)
			}
		})
	}
}

type otherHash struct{}

func (otherHash) Sum64(b []byte) uint64 { return 0 }

func TestFingerprint(t *testing.T) {
	def := DefaultSettings()
	fp := def.Fingerprint()
	if fp != DefaultSettings().Fingerprint() || fp != def.Fingerprint() {
		t.Fatal("Fingerprint of equal settings differs")
	}
	if !strings.Contains(fp, Algorithm) {
		t.Errorf("Fingerprint %q does not name the algorithm %q", fp, Algorithm)
	}
	t.Logf("default fingerprint: %s", fp)
	variants := []Settings{
		{Partitions: def.Partitions + 1, Load: def.Load, ReplicationFactor: def.ReplicationFactor},
		{Partitions: def.Partitions, Load: math.Nextafter(def.Load, 2), ReplicationFactor: def.ReplicationFactor},
		{Partitions: def.Partitions, Load: 2, ReplicationFactor: def.ReplicationFactor},
		{Partitions: def.Partitions, Load: def.Load, ReplicationFactor: def.ReplicationFactor + 1},
		{Partitions: def.Partitions, Load: def.Load, ReplicationFactor: def.ReplicationFactor, Hasher: handHash},
		{Partitions: def.Partitions, Load: def.Load, ReplicationFactor: def.ReplicationFactor, Hasher: otherHash{}},
	}
	seen := map[string]int{fp: -1}
	for i, v := range variants {
		got := v.Fingerprint()
		if j, dup := seen[got]; dup {
			t.Errorf("variant %d (%+v) has the fingerprint of variant %d: %s", i, v, j, got)
		}
		seen[got] = i
	}
}

func TestEmptyRing(t *testing.T) {
	empty, err := New(DefaultSettings(), nil)
	if err != nil {
		t.Fatal(err)
	}
	emptySlice, err := New(DefaultSettings(), []string{})
	if err != nil {
		t.Fatal(err)
	}
	var nilRing *Ring
	for name, r := range map[string]*Ring{"nil": nilRing, "zero": {}, "New(nil)": empty, "New([])": emptySlice} {
		t.Run(name, func(t *testing.T) {
			if got, ok := r.Owner("k"); ok || got != "" {
				t.Errorf("Owner = %q, %v", got, ok)
			}
			if got, ok := r.OwnerBytes([]byte("k")); ok || got != "" {
				t.Errorf("OwnerBytes = %q, %v", got, ok)
			}
			if got := r.Candidates("k", 3); got != nil {
				t.Errorf("Candidates = %q", got)
			}
			if got := r.CandidatesBytes([]byte("k"), 3); got != nil {
				t.Errorf("CandidatesBytes = %q", got)
			}
			if r.Len() != 0 || len(r.Instances()) != 0 || r.Partitions() != 0 || len(r.Owned()) != 0 {
				t.Errorf("Len %d, Instances %q, Partitions %d, Owned %v", r.Len(), r.Instances(), r.Partitions(), r.Owned())
			}
		})
	}
}

func TestBuild(t *testing.T) {
	s := Settings{Partitions: 1021, Load: DefaultLoad, ReplicationFactor: DefaultReplicationFactor}
	b, err := NewBuilder(s)
	if err != nil {
		t.Fatal(err)
	}
	names := instanceNames(5)
	r1, err := b.Build(names)
	if err != nil {
		t.Fatal(err)
	}

	if r, err := b.Build([]string{"a", "", "b"}); !errors.Is(err, ErrInvalidInstance) || r != nil {
		t.Fatalf("Build with an empty name = %v, %v; want ErrInvalidInstance", r, err)
	}
	if _, err := New(s, []string{""}); !errors.Is(err, ErrInvalidInstance) {
		t.Fatalf("New with an empty name: %v, want ErrInvalidInstance", err)
	}

	// Idempotent, and blind to duplicates and order.
	r2, err := b.Build(names)
	if err != nil {
		t.Fatal(err)
	}
	dup := append(slices.Clone(names), names[3], names[0], names[3])
	slices.Reverse(dup)
	r3, err := b.Build(dup)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*Ring{r2, r3} {
		sameRing(t, r1, r)
	}
	if r3.Len() != len(names) || !slices.IsSorted(r3.Instances()) {
		t.Errorf("Len %d, Instances %q; want %d sorted", r3.Len(), r3.Instances(), len(names))
	}
	// An earlier Ring is immutable: later builds leave it alone.
	before := slices.Clone(table(r1))
	if _, err := b.Build(names[:2]); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before, table(r1)) || r1.Len() != len(names) {
		t.Error("a later Build changed an earlier Ring")
	}
}

func TestOwnedSumsToPartitions(t *testing.T) {
	for _, n := range []int{1, 3, 10, 100} {
		r := defaultRing(t, n)
		sum := 0
		for inst, c := range r.Owned() {
			if !slices.Contains(r.Instances(), inst) {
				t.Errorf("Owned() names %s, not an instance", inst)
			}
			sum += c
		}
		if sum != DefaultPartitions || len(r.Owned()) != n {
			t.Errorf("%d instances: Owned() sums to %d over %d instances, want %d over %d",
				n, sum, len(r.Owned()), DefaultPartitions, n)
		}
	}
}

func TestLookupAllocations(t *testing.T) {
	r := defaultRing(t, 100)
	key, keyB := "/videos/1234/index.m3u8", []byte("/videos/1234/index.m3u8")
	for name, f := range map[string]func(){
		"Owner":           func() { r.Owner(key) },
		"OwnerBytes":      func() { r.OwnerBytes(keyB) },
		"Candidates":      func() { r.Candidates(key, 3) },
		"CandidatesBytes": func() { r.CandidatesBytes(keyB, MaxCandidates) },
	} {
		if a := testing.AllocsPerRun(1000, f); a != 0 {
			t.Errorf("%s allocates %v times per call", name, a)
		}
	}
}

// sameRing fails unless a and b place every partition identically: same
// owners and candidate lists (the table), instances and partition counts.
func sameRing(t *testing.T, a, b *Ring) {
	t.Helper()
	if a.partitions != b.partitions || a.width != b.width || !slices.Equal(a.instances, b.instances) ||
		!slices.Equal(a.owned, b.owned) {
		t.Fatalf("rings differ: %d/%d partitions, width %d/%d, %d/%d instances",
			a.partitions, b.partitions, a.width, b.width, len(a.instances), len(b.instances))
	}
	if i := firstDiff(table(a), table(b)); i >= 0 {
		p := i / a.width
		t.Fatalf("rings differ at partition %d: %q vs %q", p,
			a.row(uint64(p), a.width), b.row(uint64(p), b.width))
	}
}

// table writes r's placement out in full: partitions × width names, each
// partition's candidates owner first (what the Ring kept before it shared
// candidate lists between partitions).
func table(r *Ring) []string {
	var out []string
	for p := range r.Partitions() {
		out = append(out, r.row(uint64(p), r.width)...)
	}
	return out
}

// ownerAt is the owner of partition p.
func ownerAt(r *Ring, p int) string { return r.row(uint64(p), 1)[0] }

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// TestIndexTable checks that a router outside ringman that hashes a key with
// xxhash64, takes it modulo Partitions() and reads the key's row of
// IndexTable() finds exactly Candidates: what nginx/ringman.lua does.
func TestIndexTable(t *testing.T) {
	for _, n := range []int{0, 1, 3, 9} {
		t.Run(fmt.Sprint("instances=", n), func(t *testing.T) {
			r, err := New(Settings{Partitions: 1021, Load: DefaultLoad, ReplicationFactor: DefaultReplicationFactor}, instanceNames(n))
			if err != nil {
				t.Fatal(err)
			}
			table, width := r.IndexTable(), r.Width()
			if r.Hash() != "xxhash64" || width != min(n, MaxCandidates) || len(table) != r.Partitions()*width {
				t.Fatalf("Hash %q, Width %d, %d table entries for %d partitions; want xxhash64, %d, Partitions×Width",
					r.Hash(), width, len(table), r.Partitions(), min(n, MaxCandidates))
			}
			for i := range 3000 {
				key := fmt.Sprintf("host%d.example/item/%d", i%7, i)
				want := r.Candidates(key, MaxCandidates)
				var got []string
				if width > 0 {
					p := int(xxhash.Sum64String(key) % uint64(r.Partitions()))
					for _, idx := range table[p*width : (p+1)*width] {
						got = append(got, r.Instances()[idx])
					}
				}
				if !slices.Equal(got, want) {
					t.Fatalf("key %q: index table gives %q, Candidates %q", key, got, want)
				}
			}
		})
	}
}

func TestMoved(t *testing.T) {
	s := Settings{Partitions: 1021, Load: DefaultLoad, ReplicationFactor: DefaultReplicationFactor}
	three, _ := New(s, []string{"a:1", "b:1", "c:1"})
	two, _ := New(s, []string{"a:1", "b:1"})
	empty, _ := New(s, nil)
	keys, moved := 20000, 0
	for i := range keys {
		k := strconv.Itoa(i)
		x, _ := three.Owner(k)
		y, _ := two.Owner(k)
		if x != y {
			moved++
		}
	}
	got, want := Moved(three, two), float64(moved)/float64(keys)
	if math.Abs(got-want) > 0.02 || got < 0.3 {
		t.Errorf("Moved(3 instances, 2) = %.3f; keys moved: %.3f", got, want)
	}
	for _, c := range []struct {
		a, b *Ring
		want float64
	}{{three, three, 0}, {empty, empty, 0}, {nil, empty, 0}, {empty, three, 1}, {three, nil, 1}} {
		if got := Moved(c.a, c.b); got != c.want {
			t.Errorf("Moved(%d instances, %d) = %v, want %v", c.a.Len(), c.b.Len(), got, c.want)
		}
	}
}
