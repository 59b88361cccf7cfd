package ring

import (
	"cmp"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// Builder turns instance sets into Rings. It keeps the sorted virtual points
// of the last set, so that a change of a few instances re-hashes only those;
// the result depends only on the set. A Builder is not safe for concurrent
// use: one goroutine rebuilds, many read the Rings it returns.
//
// The placement is consistent's (v1.0.0, bounded loads), partition for
// partition; TestOwnerMatchesConsistent and TestRandomRingsMatchConsistent
// hold it to the library. It is computed here because the library's New
// re-sorts every point after each member it adds: 0.8 s at 1,000 instances
// with 20 points each, 18.6 s with 200.
//
// A point is its hash and a slot, a small number standing for its instance,
// so that a rebuild walks flat arrays of numbers: one change costs a pass
// over the points (to drop a leaver's or merge a joiner's in place) and one
// walk per partition, with no map lookup per point.
type Builder struct {
	settings Settings
	hasher   Hasher
	set      []Instance // the last set, sorted by key (ID or address)
	slots    []uint32   // slots[i] stands for set[i]
	slotName []string   // instance key by slot, "" for a free slot
	slotAddr []string   // instance address by slot
	slotPts  []int      // virtual points by slot
	free     []uint32   // free slots
	hashes   []uint64   // the virtual points, sorted (see comparePoints)
	owners   []uint32   // the slot of each point, aligned with hashes
}

type xxHasher struct{}

func (xxHasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// NewBuilder validates s and returns a Builder with no instances.
func NewBuilder(s Settings) (*Builder, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	h := s.Hasher
	if h == nil {
		h = xxHasher{}
	}
	return &Builder{settings: s, hasher: h}, nil
}

// ErrInvalidInstance is returned for an empty instance name.
var ErrInvalidInstance = errors.New("ring: empty instance name")

// Build returns the Ring for exactly this set of instances (duplicates are
// ignored), each its own ID with weight 1. It is idempotent.
func (b *Builder) Build(instances []string) (*Ring, error) {
	set := make([]Instance, len(instances))
	for i, inst := range instances {
		set[i] = Instance{Addr: inst}
	}
	return b.BuildInstances(set)
}

// BuildInstances returns the Ring for exactly this set of instances. Exact
// duplicates are ignored; two instances with one ID or one address that
// differ otherwise are refused (ErrDuplicateInstance). It is idempotent, and
// a set of weight-1 instances without IDs places keys exactly as Build.
func (b *Builder) BuildInstances(instances []Instance) (*Ring, error) {
	set, err := normalizeInstances(instances)
	if err != nil {
		return nil, err
	}
	b.place(set)
	return b.snapshot(), nil
}

// place brings the virtual points to set (sorted by key, no duplicates):
// the leavers' points are dropped and the joiners' merged in. An instance
// whose weight changed leaves and joins again (the points its old and new
// weights share hash the same, so only the difference moves keys); one
// whose address changed keeps its points and answers at the new address.
func (b *Builder) place(set []Instance) {
	slots := make([]uint32, len(set))
	var gone []uint32
	var joined []int // indexes into set
	for i, j := 0, 0; i < len(b.set) || j < len(set); {
		switch {
		case j == len(set) || i < len(b.set) && b.set[i].key() < set[j].key():
			gone = append(gone, b.slots[i])
			i++
		case i == len(b.set) || set[j].key() < b.set[i].key():
			joined = append(joined, j)
			j++
		case b.slotPts[b.slots[i]] != set[j].points(b.settings.ReplicationFactor):
			gone = append(gone, b.slots[i])
			joined = append(joined, j)
			i, j = i+1, j+1
		default:
			slots[j] = b.slots[i]
			b.slotAddr[slots[j]] = set[j].Addr
			i, j = i+1, j+1
		}
	}
	b.dropPoints(gone)
	n := 0
	for _, j := range joined {
		n += set[j].points(b.settings.ReplicationFactor)
	}
	fresh := make([]point, 0, n)
	for _, j := range joined {
		slots[j] = b.takeSlot(set[j])
		fresh = b.appendPoints(fresh, set[j].key(), slots[j], b.slotPts[slots[j]])
	}
	b.mergePoints(fresh)
	b.set, b.slots = set, slots
}

func (b *Builder) takeSlot(inst Instance) uint32 {
	pts := inst.points(b.settings.ReplicationFactor)
	if n := len(b.free); n > 0 {
		s := b.free[n-1]
		b.free = b.free[:n-1]
		b.slotName[s], b.slotAddr[s], b.slotPts[s] = inst.key(), inst.Addr, pts
		return s
	}
	b.slotName = append(b.slotName, inst.key())
	b.slotAddr = append(b.slotAddr, inst.Addr)
	b.slotPts = append(b.slotPts, pts)
	return uint32(len(b.slotName) - 1)
}

// dropPoints removes the points of the instances in slots gone, in one pass,
// and frees the slots.
func (b *Builder) dropPoints(gone []uint32) {
	if len(gone) == 0 {
		return
	}
	dead := make([]bool, len(b.slotName))
	for _, s := range gone {
		dead[s] = true
		b.slotName[s], b.slotAddr[s], b.slotPts[s] = "", "", 0
	}
	b.free = append(b.free, gone...)
	kept := 0
	for i, s := range b.owners {
		if !dead[s] {
			b.hashes[kept], b.owners[kept] = b.hashes[i], s
			kept++
		}
	}
	b.hashes, b.owners = b.hashes[:kept], b.owners[:kept]
	// A ring that shrank a lot gives its memory back.
	if cap(b.hashes) > 2*kept+1024 {
		b.hashes, b.owners = slices.Clone(b.hashes), slices.Clone(b.owners)
	}
}

// point is a virtual point on its way in.
type point struct {
	hash uint64
	slot uint32
}

// appendPoints appends the n virtual points of the instance keyed inst:
// the same ones consistent places (its replicaKey is "<i>:<name>"), so that
// a heavier weight adds points to a lighter one's and moves no other key.
func (b *Builder) appendPoints(dst []point, inst string, slot uint32, n int) []point {
	key := make([]byte, 0, len(inst)+8)
	for i := 0; i < n; i++ {
		key = append(strconv.AppendInt(key[:0], int64(i), 10), ':')
		key = append(key, inst...)
		dst = append(dst, point{b.hasher.Sum64(key), slot})
	}
	return dst
}

// Points that share a hash are ordered by instance, so that the ring depends
// only on the set. (consistent keeps one owner for such a hash, whichever
// member it added last: the one place where its placement depends on order.
// With 64-bit hashes it takes about a billion points to expect one.)
func (b *Builder) comparePoints(x, y point) int {
	if c := cmp.Compare(x.hash, y.hash); c != 0 {
		return c
	}
	return strings.Compare(b.slotName[x.slot], b.slotName[y.slot])
}

// Batches of at least radixPoints points (a cold start, many joiners at
// once) are sorted by a radix sort on the hash: a comparison sort spent
// about 0.1 s on the 256,000 points of 1,000 instances.
const radixPoints = 4096

// sortPoints sorts pts as comparePoints orders them, given that they come
// in the order of their instances' names.
func (b *Builder) sortPoints(pts []point) {
	if len(pts) < radixPoints {
		slices.SortFunc(pts, b.comparePoints)
		return
	}
	// The radix sort is stable and place appends joiners in name order, so
	// points that tie stay ordered by instance.
	radixSortByHash(pts)
}

// radixSortByHash sorts pts by hash, a byte at a time from the lowest.
func radixSortByHash(pts []point) {
	src, dst := pts, make([]point, len(pts))
	for shift := 0; shift < 64; shift += 8 {
		var at [256]int
		for _, pt := range src {
			at[byte(pt.hash>>shift)]++
		}
		if at[byte(src[0].hash>>shift)] == len(src) {
			continue // every point has this byte: nothing to reorder
		}
		sum := 0
		for d, c := range at {
			at[d], sum = sum, sum+c
		}
		for _, pt := range src {
			d := byte(pt.hash >> shift)
			dst[at[d]] = pt
			at[d]++
		}
		src, dst = dst, src
	}
	if &src[0] != &pts[0] {
		copy(pts, src)
	}
}

// mergePoints sorts fresh and merges it into the sorted points in place,
// from the back, so that nothing before the first fresh point moves.
func (b *Builder) mergePoints(fresh []point) {
	if len(fresh) == 0 {
		return
	}
	b.sortPoints(fresh)
	old := len(b.hashes)
	b.hashes = slices.Grow(b.hashes, len(fresh))[:old+len(fresh)]
	b.owners = slices.Grow(b.owners, len(fresh))[:old+len(fresh)]
	i, j := old-1, len(fresh)-1
	for w := len(b.hashes) - 1; j >= 0; w-- {
		// Hashes first, so that names are compared only on a tie.
		if i >= 0 && (fresh[j].hash < b.hashes[i] ||
			fresh[j].hash == b.hashes[i] && b.comparePoints(fresh[j], point{b.hashes[i], b.owners[i]}) < 0) {
			b.hashes[w], b.owners[w] = b.hashes[i], b.owners[i]
			i--
		} else {
			b.hashes[w], b.owners[w] = fresh[j].hash, fresh[j].slot
			j--
		}
	}
}

// snapshot places every partition and copies the result into an immutable
// Ring.
func (b *Builder) snapshot() *Ring {
	r := &Ring{custom: b.settings.Hasher, partitions: uint64(b.settings.Partitions)}
	if len(b.set) == 0 {
		return r
	}
	order := r.describe(b.set)
	start := b.partitionStarts()

	// Bounded loads, as consistent distributes them: partitions in id order,
	// each to the first instance clockwise from its start that is below its
	// cap, ceil(Load × partitions / instances) scaled by the instance's
	// share of the points (its weight). The caps add up to at least the
	// partition count, so the walk always ends. With equal weights the
	// points divide into exactly the instance count, and the cap is
	// consistent's to the last bit.
	limit := make([]int, len(b.slotName)) // by slot
	for _, s := range b.slots {
		share := float64(len(b.owners)) / float64(b.slotPts[s])
		limit[s] = int(math.Ceil(float64(b.settings.Partitions) / share * b.settings.Load))
	}
	owned := make([]int, len(b.slotName)) // by slot
	r.width = min(MaxCandidates, len(r.instances))
	r.table = make([]string, b.settings.Partitions*r.width)
	points := len(b.owners)
	var row [MaxCandidates]uint32
	for p, i := range start {
		for owned[b.owners[i]] >= limit[b.owners[i]] {
			if i++; i == points {
				i = 0
			}
		}
		owner := b.owners[i]
		owned[owner]++

		// The candidates after the owner: the distinct instances met walking
		// clockwise from the partition's start.
		row[0], i = owner, start[p]
		k := 1
		for step := 0; k < r.width && step < points; step++ {
			if s := b.owners[i]; !slices.Contains(row[:k], s) {
				row[k] = s
				k++
			}
			if i++; i == points {
				i = 0
			}
		}
		for c, s := range row[:k] {
			r.table[p*r.width+c] = b.slotAddr[s]
		}
	}
	r.owned = make([]int, len(r.instances))
	for i, s := range b.slots {
		r.owned[order[i]] = owned[s]
	}
	return r
}

// partitionStarts returns, by partition id, the index of the first point at
// or after the hash of the id (little-endian, as consistent hashes it),
// wrapping around. The partitions are visited in the order of their hashes,
// so that each search starts where the last one ended.
func (b *Builder) partitionStarts() []int {
	start := make([]int, b.settings.Partitions)
	i := 0
	for _, ph := range b.partitionOrder() {
		i = searchFrom(b.hashes, i, ph.hash)
		start[ph.id] = i % len(b.hashes)
	}
	return start
}

// searchFrom returns the first index at or after from whose hash is at least
// h (len(hashes) if none), given that every hash before from is below h. It
// gallops: the next partition's start is usually a few points on.
func searchFrom(hashes []uint64, from int, h uint64) int {
	lo, hi := from, from
	for step := 1; hi < len(hashes) && hashes[hi] < h; step *= 2 {
		lo, hi = hi+1, hi+step
	}
	hi = min(hi, len(hashes))
	i, _ := slices.BinarySearch(hashes[lo:hi], h)
	return lo + i
}

// partitionHash is a partition id and the hash it sits at on the ring.
type partitionHash struct {
	hash uint64
	id   uint32
}

// The partitions sorted by hash depend only on the partition count and the
// hash, so they are computed once per count for xxhash (what production
// uses) and shared by every Builder.
var partitionOrders struct {
	sync.Mutex
	byCount map[int][]partitionHash
}

func (b *Builder) partitionOrder() []partitionHash {
	if b.settings.Hasher != nil {
		return sortedPartitions(b.settings.Partitions, b.hasher)
	}
	partitionOrders.Lock()
	defer partitionOrders.Unlock()
	order, ok := partitionOrders.byCount[b.settings.Partitions]
	if !ok {
		if partitionOrders.byCount == nil {
			partitionOrders.byCount = map[int][]partitionHash{}
		}
		order = sortedPartitions(b.settings.Partitions, b.hasher)
		partitionOrders.byCount[b.settings.Partitions] = order
	}
	return order
}

func sortedPartitions(n int, h Hasher) []partitionHash {
	out := make([]partitionHash, n)
	var id [8]byte
	for p := range out {
		binary.LittleEndian.PutUint64(id[:], uint64(p))
		out[p] = partitionHash{h.Sum64(id[:]), uint32(p)}
	}
	slices.SortFunc(out, func(x, y partitionHash) int { return cmp.Compare(x.hash, y.hash) })
	return out
}
