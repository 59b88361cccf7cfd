package ring

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// smallSettings keep order-independence tests fast under -race. With 48
// instances an instance holds at most ceil(257/48*1.25) = 7 partitions, so
// the load bound pushes partitions on all the time: the part of placement
// most sensitive to order.
var smallSettings = Settings{Partitions: 257, Load: DefaultLoad, ReplicationFactor: 10}

// TestOrderIndependence: a Ring depends only on the set of instances, not on
// the order they are given in, nor on the path a Builder took to reach the set
// (one by one, in batches of any size).
func TestOrderIndependence(t *testing.T) {
	pool := instanceNames(80)
	rng := rand.New(rand.NewPCG(1, 2))
	// Single-goroutine work gains nothing from the race detector, which makes
	// it ~10x slower: fewer rounds there.
	rounds := 100
	if raceEnabled {
		rounds = 25
	}
	want := map[string]*Ring{} // reference rings by set, built from scratch
	ref := func(t *testing.T, set []string) *Ring {
		t.Helper()
		set = slices.Clone(set)
		slices.Sort(set)
		set = slices.Compact(set)
		k := fmt.Sprint(set)
		if r, ok := want[k]; ok {
			return r
		}
		r, err := New(smallSettings, set)
		if err != nil {
			t.Fatal(err)
		}
		want[k] = r
		return r
	}
	build := func(t *testing.T, b *Builder, set []string) {
		t.Helper()
		got, err := b.Build(set)
		if err != nil {
			t.Fatal(err)
		}
		sameRing(t, ref(t, set), got)
	}

	t.Run("shuffled", func(t *testing.T) {
		set := pool[:48]
		for range rounds {
			order := slices.Clone(set)
			rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			order = append(order, order[:rng.IntN(5)]...) // duplicates are ignored
			r, err := New(smallSettings, order)
			if err != nil {
				t.Fatal(err)
			}
			sameRing(t, ref(t, set), r)
		}
	})

	t.Run("one by one", func(t *testing.T) {
		b, _ := NewBuilder(smallSettings)
		order := slices.Clone(pool[:48])
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for k := 1; k <= len(order); k++ {
			build(t, b, order[:k])
		}
		for k := len(order) - 1; k >= 0; k-- { // and back down to nothing
			build(t, b, order[:k])
		}
	})

	t.Run("remove and re-add", func(t *testing.T) {
		b, _ := NewBuilder(smallSettings)
		set := pool[:48]
		build(t, b, set)
		for range 10 {
			i := rng.IntN(len(set))
			build(t, b, slices.Delete(slices.Clone(set), i, i+1))
			build(t, b, set)
		}
	})

	t.Run("batches", func(t *testing.T) {
		b, _ := NewBuilder(smallSettings)
		steps := [][]string{
			pool[:8],                         // first build: from scratch
			pool[:48],                        // +40
			pool[:10],                        // -38
			pool[:42],                        // +32
			pool[:10],                        // back
			pool[5:48],                       // 5 out, 38 in
			pool[10:53],                      // 5 out, 5 in
			append(pool[:3], pool[60:70]...), // most out, 10 in
			nil,                              // empty
			pool[20:23],                      // from empty
		}
		for i := 10; i < 48; i += 3 { // small batches up to the big batch's set
			steps = append(steps, pool[:i])
		}
		steps = append(steps, pool[:48])
		for _, set := range steps {
			build(t, b, set)
		}
	})

	t.Run("random walk", func(t *testing.T) {
		// Random changes of random size from one Builder.
		b, _ := NewBuilder(smallSettings)
		in := map[string]bool{}
		for range rounds {
			set := toggleRandom(rng, pool, in, []int{1, 1, 2, 3, 8, 32, 33, 40})
			rng.Shuffle(len(set), func(i, j int) { set[i], set[j] = set[j], set[i] })
			build(t, b, set)
		}
	})
}

// toggleRandom flips a random number (one of sizes) of random instances of
// pool in or out of the set in, and returns the set in pool order.
func toggleRandom(rng *rand.Rand, pool []string, in map[string]bool, sizes []int) []string {
	for range sizes[rng.IntN(len(sizes))] {
		x := pool[rng.IntN(len(pool))]
		in[x] = !in[x]
	}
	var set []string
	for _, x := range pool {
		if in[x] {
			set = append(set, x)
		}
	}
	return set
}

// TestBalance: no instance owns more than ceil(P/M*Load) partitions (the
// library's bound), so max/avg over partitions is at most Load + M/P; over
// keys the ratio also carries sampling noise.
func TestBalance(t *testing.T) {
	const P, L = DefaultPartitions, DefaultLoad
	nKeys := 1_000_000
	if raceEnabled {
		nKeys = 200_000
	}
	for _, n := range []int{10, 100, 1000} {
		t.Run(fmt.Sprint("instances=", n), func(t *testing.T) {
			r := defaultRing(t, n)
			avg := float64(P) / float64(n)
			capacity := math.Ceil(avg * L)
			lo, hi := math.MaxInt, 0
			for _, c := range r.Owned() {
				lo, hi = min(lo, c), max(hi, c)
			}
			if float64(hi) > capacity {
				t.Errorf("an instance owns %d partitions, over the bound %v", hi, capacity)
			}
			if got, bound := float64(hi)/avg, L+float64(n)/P; got > bound {
				t.Errorf("partitions max/avg = %.4f > %.4f", got, bound)
			}

			counts := make(map[string]int, n)
			var buf []byte
			for i := range nKeys {
				buf = strconv.AppendInt(append(buf[:0], "key-"...), int64(i), 10)
				o, _ := r.OwnerBytes(buf)
				counts[o]++
			}
			kmax := 0
			for _, c := range counts {
				kmax = max(kmax, c)
			}
			kavg := float64(nKeys) / float64(n)
			// Keys of an instance owning c partitions are ~Binomial(N, c/P);
			// for the busiest (c = capacity) allow 5 standard deviations
			// (deterministic hashing: it either passes or fails every run).
			mean := float64(nKeys) * capacity / P
			bound := (mean + 5*math.Sqrt(mean)) / kavg
			got := float64(kmax) / kavg
			t.Logf("%d instances: partitions min %d max %d avg %.1f (max/avg %.3f); %d keys max/avg %.3f (bound %.3f)",
				n, lo, hi, avg, float64(hi)/avg, nKeys, got, bound)
			if got > bound {
				t.Errorf("keys max/avg = %.3f > %.3f", got, bound)
			}
		})
	}
}

// TestEveryInstanceOwnsPartitions is the acceptance criterion for the default
// partition count: at 1,000 instances none is left without keys.
func TestEveryInstanceOwnsPartitions(t *testing.T) {
	r := defaultRing(t, 1000)
	owned := r.Owned()
	lo := math.MaxInt
	for inst, c := range owned {
		if c == 0 {
			t.Errorf("%s owns no partition", inst)
		}
		lo = min(lo, c)
	}
	t.Logf("1,000 instances, %d partitions: the least loaded instance owns %d", DefaultPartitions, lo)
}

// movementFixture is a 100-instance ring with default settings and the rings
// after single changes, shared between the movement and candidate tests.
type movementFixture struct {
	base   *Ring
	leaves map[string]*Ring // instance removed -> ring
	joins  map[string]*Ring // instance added -> ring
}

var movement *movementFixture

func movementRings(t *testing.T) *movementFixture {
	t.Helper()
	if movement != nil {
		return movement
	}
	names := instanceNames(104)
	base := names[:100]
	b, err := NewBuilder(DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	f := &movementFixture{leaves: map[string]*Ring{}, joins: map[string]*Ring{}}
	if f.base, err = b.Build(base); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 99} {
		x := base[i]
		if f.leaves[x], err = b.Build(slices.Delete(slices.Clone(base), i, i+1)); err != nil {
			t.Fatal(err)
		}
	}
	for _, x := range names[100:102] {
		if f.joins[x], err = b.Build(append(slices.Clone(base), x)); err != nil {
			t.Fatal(err)
		}
	}
	movement = f
	return f
}

// TestKeyMovement: when one of 100 instances leaves, its keys move (~1%)
// plus the keys that the load bound pushes on; when one joins, keys move to
// it plus the same kind of knock-on.
func TestKeyMovement(t *testing.T) {
	f := movementRings(t)
	nKeys := 100_000
	if raceEnabled {
		nKeys = 20_000 // 1% is still 200 keys
	}
	keys := make([][]byte, nKeys)
	for i := range keys {
		keys[i] = []byte("/segment/" + strconv.Itoa(i))
	}
	owners := func(r *Ring) []string {
		out := make([]string, nKeys)
		for i, k := range keys {
			out[i], _ = r.OwnerBytes(k)
		}
		return out
	}
	before := owners(f.base)
	pct := func(n int) float64 { return 100 * float64(n) / float64(nKeys) }

	for x, r := range f.leaves {
		after := owners(r)
		moved, own := 0, 0
		for i := range keys {
			if before[i] == x {
				own++
				if after[i] == x {
					t.Fatalf("key %s still on removed instance %s", keys[i], x)
				}
			}
			if before[i] != after[i] {
				moved++
			}
		}
		extra := moved - own
		t.Logf("leave %s: moved %.2f%% = its own %.2f%% + %.2f%% others", x, pct(moved), pct(own), pct(extra))
		// Ideal is 1%; FINDINGS measured 1.5% with 20 points per instance.
		// With 256 the load bound rarely binds: measured 0.01% others.
		if pct(moved) > 1.5 || pct(extra) > 0.25 {
			t.Errorf("leave %s moved %.2f%% of keys (%.2f%% not its own); want <= 1.5%% and <= 0.25%%", x, pct(moved), pct(extra))
		}
	}
	for x, r := range f.joins {
		after := owners(r)
		moved, toNew := 0, 0
		for i := range keys {
			if after[i] == x {
				toNew++
			}
			if before[i] != after[i] {
				moved++
			}
		}
		extra := moved - toNew
		t.Logf("join %s: moved %.2f%% = to it %.2f%% + %.2f%% between others", x, pct(moved), pct(toNew), pct(extra))
		if pct(moved) > 1.5 || pct(extra) > 0.25 {
			t.Errorf("join %s moved %.2f%% of keys (%.2f%% between others); want <= 1.5%% and <= 0.25%%", x, pct(moved), pct(extra))
		}
	}
}

// TestCandidatesPredictNewOwner measures the doc comment's claim that the
// candidates after the owner are "the ones most likely to own the key if the
// owner goes away": over every partition of a removed instance (exact: keys
// spread evenly over partitions), how often the old second candidate, or any
// old candidate, is the new owner.
func TestCandidatesPredictNewOwner(t *testing.T) {
	f := movementRings(t)
	w := f.base.width
	for x, r := range f.leaves {
		total, second, anyCand := 0, 0, 0
		for p := range DefaultPartitions {
			row := f.base.row(uint64(p), f.base.width)
			if row[0] != x {
				continue
			}
			total++
			now := ownerAt(r, p)
			if now == row[1] {
				second++
			}
			if slices.Contains(row[1:], now) {
				anyCand++
			}
		}
		t.Logf("leave %s: of its %d partitions, the new owner was candidate #2 for %.1f%%, one of candidates #2..#%d for %.1f%%",
			x, total, 100*float64(second)/float64(total), w, 100*float64(anyCand)/float64(total))
		// Measured 96-99% at 100 instances: a regression shows well below 90%.
		if 10*second < 9*total {
			t.Errorf("leave %s: candidate #2 became the owner for only %d of %d partitions", x, second, total)
		}
	}
}

// TestUnboundedLoadMovesOnlyTheLeaversKeys backs the README's advice: with
// the load bound out of reach (Load = MaxLoad), an instance that leaves
// takes only its own keys with it, because every partition stays with the
// first instance clockwise. With the default bound, a few other keys move
// back to instances whose cap rose (TestKeyMovement bounds how many).
func TestUnboundedLoadMovesOnlyTheLeaversKeys(t *testing.T) {
	s := Settings{Partitions: 4093, Load: MaxLoad, ReplicationFactor: DefaultReplicationFactor}
	for trial := range 20 {
		names := make([]string, 3+trial%5)
		for i := range names {
			names[i] = fmt.Sprintf("10.%d.0.%d:80", trial, i+1)
		}
		all, err := New(s, names)
		if err != nil {
			t.Fatal(err)
		}
		gone := names[trial%len(names)]
		rest, err := New(s, slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == gone }))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 20_000 {
			key := "/segment/" + strconv.Itoa(i)
			before, _ := all.Owner(key)
			after, _ := rest.Owner(key)
			if before != gone && before != after {
				t.Fatalf("trial %d, %d instances, %s left: key %s moved from %s to %s", trial, len(names), gone, key, before, after)
			}
		}
	}
}

// TestSmallRingsMoveOnlyTheLeaversKeys: with the default settings, the load
// bound stays out of play in rings of a few instances, so an instance that
// leaves takes only its own keys with it and every other key stays where it
// was (what the nginx tests check end to end with three nodes).
func TestSmallRingsMoveOnlyTheLeaversKeys(t *testing.T) {
	trials := 100
	if raceEnabled {
		trials = 25
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for n := 2; n <= 5; n++ {
		for trial := range trials {
			names := make([]string, n)
			for i := range names {
				// Loopback addresses with random ports, as the tests under test/ get them.
				names[i] = fmt.Sprintf("127.0.0.1:%d", 1024+rng.IntN(64000))
			}
			all, err := New(DefaultSettings(), names)
			if err != nil {
				t.Fatal(err)
			}
			gone := names[rng.IntN(n)]
			rest, err := New(DefaultSettings(), slices.DeleteFunc(slices.Clone(names), func(x string) bool { return x == gone }))
			if err != nil {
				t.Fatal(err)
			}
			for p := range DefaultPartitions {
				before, after := ownerAt(all, p), ownerAt(rest, p)
				if before != gone && before != after {
					t.Fatalf("ring %d of %d instances %q, %s left: partition %d moved from %s to %s",
						trial, n, names, gone, p, before, after)
				}
			}
		}
	}
}

// TestMoreInstancesThanPartitions: with more instances than partitions the
// ring still builds and answers, every partition has one owner, each owner
// holds exactly one partition (the cap is 1), and the other instances own
// nothing, are counted by Idle, and still appear as candidates; the settings
// say so before the ring is built.
func TestMoreInstancesThanPartitions(t *testing.T) {
	s := Settings{Partitions: 97, Load: DefaultLoad, ReplicationFactor: 20}
	names := instanceNames(300)
	r, err := New(s, names)
	if err != nil {
		t.Fatal(err)
	}
	owners, inRows := map[string]bool{}, map[string]bool{}
	for p := range s.Partitions {
		owners[ownerAt(r, p)] = true
		for _, c := range r.row(uint64(p), r.width) {
			inRows[c] = true
		}
	}
	for inst, c := range r.Owned() {
		if c > 1 || (c == 1) != owners[inst] {
			t.Fatalf("%s owns %d partitions (owner of one: %v); want at most 1", inst, c, owners[inst])
		}
	}
	if len(owners) != s.Partitions || r.Idle() != len(names)-s.Partitions {
		t.Errorf("%d owners, Idle() = %d; want %d and %d", len(owners), r.Idle(), s.Partitions, len(names)-s.Partitions)
	}
	if len(inRows) <= len(owners) {
		t.Errorf("candidate rows name %d instances, no more than the %d owners", len(inRows), len(owners))
	}
	if got, ok := r.Owner("/any/key"); !ok || !owners[got] {
		t.Errorf("Owner = %q, %v; want one of the owners", got, ok)
	}
	err = s.CheckInstances(len(names))
	if err == nil || !strings.Contains(err.Error(), "300 instances on 97 partitions") ||
		!strings.Contains(err.Error(), fmt.Sprint(PartitionsFor(300))) {
		t.Errorf("CheckInstances(300) = %v; want an error naming the counts and %d partitions", err, PartitionsFor(300))
	}
}

// TestCheckInstances: the advice starts where rings start to leave
// instances idle, and what it advises is enough.
func TestCheckInstances(t *testing.T) {
	def := DefaultSettings()
	limit := DefaultPartitions / MinPartitionsPerInstance
	for _, tc := range []struct {
		n    int
		warn bool
	}{{0, false}, {1, false}, {1000, false}, {limit, false}, {limit + 1, true}, {20000, true}} {
		if err := def.CheckInstances(tc.n); (err != nil) != tc.warn {
			t.Errorf("CheckInstances(%d) = %v; want an error: %v", tc.n, err, tc.warn)
		}
	}
	for _, tc := range []struct{ n, want int }{
		{-1, DefaultPartitions}, {1, DefaultPartitions}, {1000, DefaultPartitions}, {1023, DefaultPartitions},
		{1024, 16411}, {10000, 160001}, {20000, 320009}, {1 << 40, 1048573},
	} {
		p := PartitionsFor(tc.n)
		if p != tc.want {
			t.Errorf("PartitionsFor(%d) = %d, want %d", tc.n, p, tc.want)
		}
		s := Settings{Partitions: p, Load: DefaultLoad, ReplicationFactor: DefaultReplicationFactor}
		if err := s.Validate(); err != nil {
			t.Errorf("PartitionsFor(%d) = %d: %v", tc.n, p, err)
		}
		if tc.n <= MaxPartitions/MinPartitionsPerInstance {
			if err := s.CheckInstances(tc.n); err != nil {
				t.Errorf("PartitionsFor(%d) = %d is not enough: %v", tc.n, p, err)
			}
		}
	}
	// A ring at the advice's limit leaves no instance idle.
	s := Settings{Partitions: 4093, Load: DefaultLoad, ReplicationFactor: DefaultReplicationFactor}
	r, err := New(s, instanceNames(s.Partitions/MinPartitionsPerInstance))
	if err != nil {
		t.Fatal(err)
	}
	if r.Idle() != 0 {
		t.Errorf("%d instances on %d partitions leave %d idle", r.Len(), s.Partitions, r.Idle())
	}
	// One instance owns every partition there is.
	if err := (Settings{Partitions: 1, Load: 1, ReplicationFactor: 1}).CheckInstances(1); err != nil {
		t.Errorf("one instance on one partition: %v", err)
	}
}
