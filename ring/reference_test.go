package ring

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/buraksezer/consistent"
)

// referenceTable is the placement written the plain way, as the Builder
// computed it before it was made fast: every point a (hash, name) pair
// sorted from scratch, a binary search per partition, and the same bounded
// walk and candidate walk. It returns the partitions × width table of
// instance names (owner first), what table(ring) writes out.
func referenceTable(s Settings, instances []string) []string {
	set := slices.Clone(instances)
	slices.Sort(set)
	set = slices.Compact(set)
	if len(set) == 0 {
		return nil
	}
	h := s.Hasher
	if h == nil {
		h = xxHasher{}
	}
	type refPoint struct {
		hash     uint64
		instance string
	}
	var pts []refPoint
	for _, inst := range set {
		for i := range s.ReplicationFactor {
			pts = append(pts, refPoint{h.Sum64([]byte(strconv.Itoa(i) + ":" + inst)), inst})
		}
	}
	slices.SortFunc(pts, func(a, b refPoint) int {
		if c := cmp.Compare(a.hash, b.hash); c != 0 {
			return c
		}
		return strings.Compare(a.instance, b.instance)
	})
	limit := int(math.Ceil(float64(s.Partitions) / float64(len(set)) * s.Load))
	width := min(MaxCandidates, len(set))
	owned := map[string]int{}
	table := make([]string, 0, s.Partitions*width)
	var id [8]byte
	for p := range s.Partitions {
		binary.LittleEndian.PutUint64(id[:], uint64(p))
		ph := h.Sum64(id[:])
		start, _ := slices.BinarySearchFunc(pts, ph, func(pt refPoint, h uint64) int { return cmp.Compare(pt.hash, h) })
		start %= len(pts)
		i := start
		for owned[pts[i].instance] >= limit {
			i = (i + 1) % len(pts)
		}
		owner := pts[i].instance
		owned[owner]++
		row := []string{owner}
		for step, j := 0, start; len(row) < width && step < len(pts); step++ {
			if !slices.Contains(row, pts[j].instance) {
				row = append(row, pts[j].instance)
			}
			j = (j + 1) % len(pts)
		}
		table = append(table, row...)
	}
	return table
}

// randomName is an instance name of 1 to 24 random bytes, or an address.
func randomName(rng *rand.Rand) string {
	if rng.IntN(2) == 0 {
		return fmt.Sprintf("10.%d.%d.%d:%d", rng.IntN(256), rng.IntN(256), rng.IntN(256), 1+rng.IntN(65535))
	}
	b := make([]byte, 1+rng.IntN(24))
	for i := range b {
		b[i] = byte(1 + rng.IntN(255))
	}
	return string(b)
}

func randomNames(rng *rand.Rand, n int) []string {
	seen := map[string]bool{}
	out := make([]string, 0, n)
	for len(out) < n {
		if x := randomName(rng); !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// TestRandomRingsMatchConsistent holds the Builder to the library on random
// rings: 1 to 2,000 instances with random names, partition counts from 1
// (fewer partitions than instances) to the default, load factors from 1 to
// MaxLoad. Every partition's owner must be the library's, and every
// candidate row the plain reference's.
func TestRandomRingsMatchConsistent(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	partitionCounts := []int{1, 2, 7, 97, 271, 1021, 4093, DefaultPartitions}
	loads := []float64{1, 1.01, 1.1, DefaultLoad, 1.5, 2, 3.7, MaxLoad}
	rings, maxInstances := 200, 2000
	if raceEnabled {
		rings, maxInstances = 20, 100
	}
	var budget time.Duration
	for k := range rings {
		// Sizes spread evenly over orders of magnitude, the largest last.
		n := int(math.Round(math.Pow(float64(maxInstances), float64(k+1)/float64(rings))))
		s := Settings{
			Partitions: partitionCounts[rng.IntN(len(partitionCounts))],
			Load:       loads[rng.IntN(len(loads))],
			// consistent.New sorts all points after each member: keep
			// n² × points per instance affordable.
			ReplicationFactor: 1 + rng.IntN(max(1, min(DefaultReplicationFactor, 1_000_000/(n*n)))),
		}
		names := randomNames(rng, n)
		t.Run(fmt.Sprintf("n%d/p%d/r%d/l%g", n, s.Partitions, s.ReplicationFactor, s.Load), func(t *testing.T) {
			r, err := New(s, names)
			if err != nil {
				t.Fatal(err)
			}
			began := time.Now()
			c := consistent.New(members(names), consistent.Config{
				Hasher: xxHasher{}, PartitionCount: s.Partitions, ReplicationFactor: s.ReplicationFactor, Load: s.Load,
			})
			budget += time.Since(began)
			for p := range s.Partitions {
				if got, want := ownerAt(r, p), c.GetPartitionOwner(p).String(); got != want {
					t.Fatalf("partition %d: owner %q, consistent %q", p, got, want)
				}
			}
			if i := firstDiff(table(r), referenceTable(s, names)); i >= 0 {
				p := i / r.width
				t.Fatalf("partition %d: candidates %q, the reference's differ at entry %d", p, r.row(uint64(p), r.width), i%r.width)
			}
		})
	}
	t.Logf("%d rings up to %d instances; consistent.New took %v in all", rings, maxInstances, budget)
}

// TestRandomChangesMatchReference drives one Builder through random joins
// and leaves of random size, on rings large enough that the in-place merge
// and compaction see every position, and compares each Ring with the plain
// reference built from scratch.
func TestRandomChangesMatchReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	pool := randomNames(rng, 600)
	steps := 60
	if raceEnabled {
		steps = 12
	}
	for _, s := range []Settings{
		{Partitions: 1021, Load: DefaultLoad, ReplicationFactor: 20},
		{Partitions: 97, Load: 1, ReplicationFactor: 3}, // more instances than partitions
		{Partitions: 4093, Load: 1.01, ReplicationFactor: 64},
	} {
		t.Run(s.Fingerprint(), func(t *testing.T) {
			b, err := NewBuilder(s)
			if err != nil {
				t.Fatal(err)
			}
			in := map[string]bool{}
			for step := range steps {
				set := toggleRandom(rng, pool, in, []int{1, 1, 1, 2, 5, 50, 300})
				r, err := b.Build(set)
				if err != nil {
					t.Fatal(err)
				}
				want := referenceTable(s, set)
				if i := firstDiff(table(r), want); i >= 0 {
					t.Fatalf("step %d, %d instances: table differs from the reference at entry %d (partition %d)",
						step, len(set), i, i/max(1, r.width))
				}
			}
		})
	}
}

// coarseHash keeps 12 bits of xxhash, so that points tie all the time.
type coarseHash struct{}

func (coarseHash) Sum64(b []byte) uint64 { return xxHasher{}.Sum64(b) >> 52 << 52 }

// TestTiedHashes: points that share a hash are ordered by instance whether
// they arrive in one big batch (the radix sort) or a few at a time (the
// comparison sort and the merge), as the reference orders them.
func TestTiedHashes(t *testing.T) {
	s := Settings{Partitions: 1021, Load: DefaultLoad, ReplicationFactor: 64, Hasher: coarseHash{}}
	names := randomNames(rand.New(rand.NewPCG(9, 10)), 200)
	want := referenceTable(s, names)
	all, err := New(s, names) // 12,800 points in one batch
	if err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(table(all), want); i >= 0 {
		t.Fatalf("built at once: table differs from the reference at entry %d", i)
	}
	b, err := NewBuilder(s)
	if err != nil {
		t.Fatal(err)
	}
	for k := 1; k <= len(names); k += 7 {
		if _, err := b.Build(names[:k]); err != nil {
			t.Fatal(err)
		}
	}
	r, err := b.Build(names)
	if err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(table(r), want); i >= 0 {
		t.Fatalf("built a few at a time: table differs from the reference at entry %d", i)
	}
}

// TestListLayouts: each way a Ring keeps its candidate lists (shared with
// 2-byte or 4-byte offsets, or one per partition) places exactly as the
// reference does, Moved compares rings of different layouts, and
// IndexTable writes out every partition's row.
func TestListLayouts(t *testing.T) {
	for _, tc := range []struct {
		partitions, instances int
		layout                string
	}{
		{DefaultPartitions, 1, "at16"},
		{DefaultPartitions, 2, "at16"},
		{DefaultPartitions, 8, "at16"},
		{DefaultPartitions, 100, "own"},
		{PartitionsFor(10000), 40, "at32"},
		{97, 3, "own"}, // more points than partitions
	} {
		t.Run(fmt.Sprintf("p%d/n%d", tc.partitions, tc.instances), func(t *testing.T) {
			s := Settings{Partitions: tc.partitions, Load: DefaultLoad, ReplicationFactor: DefaultReplicationFactor}
			names := instanceNames(tc.instances)
			r, err := New(s, names)
			if err != nil {
				t.Fatal(err)
			}
			layout := "own"
			switch {
			case r.at16 != nil:
				layout = "at16"
			case r.at32 != nil:
				layout = "at32"
			}
			if layout != tc.layout {
				t.Errorf("layout %s, want %s (%d names in lists)", layout, tc.layout, len(r.lists))
			}
			want := referenceTable(s, names)
			if i := firstDiff(table(r), want); i >= 0 {
				t.Fatalf("table differs from the reference at entry %d (partition %d)", i, i/r.width)
			}
			index := r.IndexTable()
			for i, inst := range want {
				if r.Instances()[index[i]] != inst {
					t.Fatalf("IndexTable entry %d names %s, want %s", i, r.Instances()[index[i]], inst)
				}
			}
			more, err := New(s, instanceNames(tc.instances+100)) // most likely another layout
			if err != nil {
				t.Fatal(err)
			}
			moved := 0
			for p := range tc.partitions {
				if ownerAt(r, p) != ownerAt(more, p) {
					moved++
				}
			}
			if got, want := Moved(r, more), float64(moved)/float64(tc.partitions); got != want || Moved(r, r) != 0 {
				t.Errorf("Moved to 100 more instances %g, want %g; Moved(r, r) %g, want 0", got, want, Moved(r, r))
			}
		})
	}
}

// TestKeptStartsMatchSearch: the partition starts a large ring's Builder
// shifts through joins and leaves of a few instances stay what a search
// from scratch finds.
func TestKeptStartsMatchSearch(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	pool := randomNames(rng, 400)
	s := Settings{Partitions: 1021, Load: DefaultLoad, ReplicationFactor: 20}
	for _, hasher := range []Hasher{nil, coarseHash{}} { // coarseHash: points tie all the time
		s.Hasher = hasher
		b, err := NewBuilder(s)
		if err != nil {
			t.Fatal(err)
		}
		in := map[string]bool{}
		shifted := 0
		for step := range 80 {
			set := toggleRandom(rng, pool, in, []int{1, 1, 2, 3, 200})
			kept := b.starts != nil
			if _, err := b.Build(set); err != nil {
				t.Fatal(err)
			}
			if b.starts == nil {
				continue
			}
			if kept {
				shifted++
			}
			if want := b.searchStarts(); !slices.Equal(b.starts, want) {
				t.Fatalf("%T step %d, %d instances: kept starts differ from a search", hasher, step, len(set))
			}
		}
		if shifted < 20 {
			t.Errorf("%T: only %d of 80 changes shifted kept starts", hasher, shifted)
		}
	}
}
