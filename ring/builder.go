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
	starts   []uint32   // by partition, the points below its hash; nil unless kept (see partitionStarts)
	lists    candidateLists
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

// dropPoints removes the points of the instances in slots gone and frees
// the slots.
func (b *Builder) dropPoints(gone []uint32) {
	if len(gone) == 0 {
		return
	}
	pts := 0
	for _, s := range gone {
		pts += b.slotPts[s]
	}
	if pts*fewPoints > len(b.hashes) || !b.cutPoints(gone) {
		b.sweepPoints(gone)
	}
	for _, s := range gone {
		b.slotName[s], b.slotAddr[s], b.slotPts[s] = "", "", 0
	}
	b.free = append(b.free, gone...)
	// A ring that shrank a lot gives its memory back.
	if kept := len(b.hashes); cap(b.hashes) > 2*kept+1024 {
		b.hashes, b.owners = slices.Clone(b.hashes), slices.Clone(b.owners)
	}
}

// A change of at most 1/fewPoints of the points finds each of them by its
// hash and moves the points in between with copy; a larger one tests every
// point in one pass. At 10,000 instances copy made one leave or join about
// twice as fast.
const fewPoints = 64

// sweepPoints removes the points of the instances in slots gone, in one
// pass that tests every point.
func (b *Builder) sweepPoints(gone []uint32) {
	b.starts = nil
	dead := make([]bool, len(b.slotName))
	for _, s := range gone {
		dead[s] = true
	}
	kept := 0
	for i, s := range b.owners {
		if !dead[s] {
			b.hashes[kept], b.owners[kept] = b.hashes[i], s
			kept++
		}
	}
	b.hashes, b.owners = b.hashes[:kept], b.owners[:kept]
}

// cutPoints removes the points of the instances in slots gone, found by
// their hashes (it runs before their names are cleared). It reports false,
// having changed nothing, if a point is not where it should be.
func (b *Builder) cutPoints(gone []uint32) bool {
	var pts []point
	for _, s := range gone {
		pts = b.appendPoints(pts, b.slotName[s], s, b.slotPts[s])
	}
	at := make([]int, len(pts))
	for k, pt := range pts {
		i, _ := slices.BinarySearch(b.hashes, pt.hash)
		for i < len(b.hashes) && b.hashes[i] == pt.hash && b.owners[i] != pt.slot {
			i++
		}
		if i == len(b.hashes) || b.hashes[i] != pt.hash {
			return false
		}
		at[k] = i
	}
	slices.Sort(at)
	// Two points of one instance with one hash were both found at the
	// first; they sit side by side, as ties are ordered by instance.
	for k := 1; k < len(at); k++ {
		if at[k] <= at[k-1] {
			i := at[k-1] + 1
			if i == len(b.hashes) || b.hashes[i] != b.hashes[at[k-1]] || b.owners[i] != b.owners[at[k-1]] {
				return false
			}
			at[k] = i
		}
	}
	w := at[0]
	for k, i := range at {
		end := len(b.hashes)
		if k+1 < len(at) {
			end = at[k+1]
		}
		copy(b.owners[w:], b.owners[i+1:end])
		w += copy(b.hashes[w:], b.hashes[i+1:end])
	}
	b.hashes, b.owners = b.hashes[:w], b.owners[:w]
	if b.starts != nil {
		hashes := make([]uint64, len(pts))
		for k, pt := range pts {
			hashes[k] = pt.hash
		}
		slices.Sort(hashes)
		b.shiftStarts(hashes, -1)
	}
	return true
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
	if len(fresh)*fewPoints <= old {
		// Each fresh point goes where a search puts it, and the old points
		// after it move up in one copy.
		end := old
		for j := len(fresh) - 1; j >= 0; j-- {
			pos := b.insertionPoint(fresh[j], end)
			copy(b.hashes[pos+j+1:], b.hashes[pos:end])
			copy(b.owners[pos+j+1:], b.owners[pos:end])
			b.hashes[pos+j], b.owners[pos+j] = fresh[j].hash, fresh[j].slot
			end = pos
		}
		if b.starts != nil {
			hashes := make([]uint64, len(fresh))
			for k, pt := range fresh {
				hashes[k] = pt.hash
			}
			b.shiftStarts(hashes, 1)
		}
		return
	}
	b.starts = nil
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

// insertionPoint is the index among the first end points of the first one
// that pt sorts before: where the merge above would put it.
func (b *Builder) insertionPoint(pt point, end int) int {
	i, _ := slices.BinarySearch(b.hashes[:end], pt.hash)
	for i < end && b.hashes[i] == pt.hash && b.comparePoints(pt, point{b.hashes[i], b.owners[i]}) >= 0 {
		i++
	}
	return i
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
	points := len(b.owners)
	// With fewer points than partitions, partitions share start points, and
	// so candidate lists (see list). Otherwise nearly every partition has a
	// list of its own, written straight into the Ring.
	shared := points < b.settings.Partitions
	if shared {
		b.lists.reset(points, b.settings.Partitions, r.width)
	} else {
		b.lists.atPoint = nil
		r.lists = make([]string, b.settings.Partitions*r.width)
	}
	var row [MaxCandidates]uint32
	for p, i := range start {
		for owned[b.owners[i]] >= limit[b.owners[i]] {
			if i++; i == points {
				i = 0
			}
		}
		owner := b.owners[i]
		owned[owner]++
		if shared {
			b.lists.of[p] = b.list(start[p], owner, r.width)
			continue
		}
		for c, s := range b.appendCandidates(row[:0], start[p], owner, r.width) {
			r.lists[p*r.width+c] = b.slotAddr[s]
		}
	}
	if shared {
		b.lists.publish(r, b.slotAddr)
	}
	r.owned = make([]int, len(r.instances))
	for i, s := range b.slots {
		r.owned[order[i]] = owned[s]
	}
	return r
}

// candidateLists is what the Builder uses to share candidate lists among
// partitions. Only atPoint is kept from one rebuild to the next (zeroed):
// the rest would cost each service's Builder about a Ring again.
type candidateLists struct {
	atPoint  []uint32          // by point, 1 + the number of a list found there, 0 for none
	slots    []uint32          // the distinct lists, width slots each
	key      []uint32          // the point each list was found at (see list)
	overflow map[uint64]uint32 // (point, owner) → number, for a second owner at one point
	of       []uint32          // by partition, its list's number
}

func (c *candidateLists) reset(points, partitions, width int) {
	if len(c.atPoint) < points || len(c.atPoint) > 2*points+1024 {
		c.atPoint = make([]uint32, points)
	}
	c.slots = make([]uint32, 0, points*width)
	c.key = make([]uint32, 0, points)
	c.of = make([]uint32, partitions)
}

// list returns the number of the candidate list of a partition that starts
// at point from and is owned by slot owner, adding the list if it is new.
//
// The list is the owner, then the other instances in the order they are
// first met walking clockwise from the start. That walk does not change
// when it starts one point on past a point of the owner (skipped anyway) or
// of the same instance as the next point (met there first either way), so
// the list is looked up at the first point on from the start where neither
// holds: partitions whose starts differ only by such points share it.
func (b *Builder) list(from int, owner uint32, width int) uint32 {
	c := &b.lists
	at, n := b.canonicalStart(from, owner, width)
	num := uint32(len(c.key))
	switch {
	case n == 0:
		c.atPoint[at] = num + 1
	case c.slots[int(n-1)*width] == owner:
		return n - 1
	default:
		// The load bound moved another owner's partition here: rare.
		key := uint64(at)<<32 | uint64(owner)
		if m, ok := c.overflow[key]; ok {
			return m
		}
		if c.overflow == nil {
			c.overflow = map[uint64]uint32{}
		}
		c.overflow[key] = num
	}
	c.key = append(c.key, uint32(at))
	c.slots = b.appendCandidates(c.slots, at, owner, width)
	return num
}

// appendCandidates appends the candidate list of a partition that starts at
// point from and is owned by slot owner: the owner, then the distinct
// instances met walking clockwise from the start, width slots in all.
func (b *Builder) appendCandidates(dst []uint32, from int, owner uint32, width int) []uint32 {
	row := len(dst)
	dst = append(dst, owner)
	points := len(b.owners)
	for i, step := from, 0; len(dst)-row < width && step < points; step++ {
		if s := b.owners[i]; !slices.Contains(dst[row:], s) {
			dst = append(dst, s)
		}
		if i++; i == points {
			i = 0
		}
	}
	return dst
}

// canonicalStart returns the point that the list of a partition starting at
// from and owned by owner is looked up at (see list), and the mark there.
func (b *Builder) canonicalStart(from int, owner uint32, width int) (int, uint32) {
	at, points := from, len(b.owners)
	if width == 1 {
		at = 0 // a single instance: one list
	} else {
		// Ends: some point belongs to another instance, and the last of its
		// run is followed by a different one.
		for {
			next := at + 1
			if next == points {
				next = 0
			}
			if s := b.owners[at]; s != owner && s != b.owners[next] {
				break
			}
			at = next
		}
	}
	return at, b.lists.atPoint[at]
}

// publish copies the lists into r as names and leaves c empty. Where each
// partition's list starts goes into the smallest integer that holds it;
// when sharing lists would save little, every partition gets a copy of its
// own instead (see Ring.listAt).
func (c *candidateLists) publish(r *Ring, slotAddr []string) {
	width := uint32(r.width)
	switch {
	case 2*len(c.key) > len(c.of):
		r.lists = make([]string, 0, len(c.of)*r.width)
		for _, n := range c.of {
			for _, s := range c.slots[n*width : (n+1)*width] {
				r.lists = append(r.lists, slotAddr[s])
			}
		}
	case len(c.slots) <= 1<<16:
		r.at16 = make([]uint16, len(c.of))
		for p, n := range c.of {
			r.at16[p] = uint16(n * width)
		}
	default:
		for p, n := range c.of {
			c.of[p] = n * width
		}
		r.at32 = c.of
	}
	if r.lists == nil {
		r.lists = make([]string, len(c.slots))
		for i, s := range c.slots {
			r.lists[i] = slotAddr[s]
		}
	}
	for _, at := range c.key {
		c.atPoint[at] = 0
	}
	*c = candidateLists{atPoint: c.atPoint}
}

// partitionStarts returns, by partition id, the index of the first point at
// or after the hash of the id (little-endian, as consistent hashes it),
// wrapping around.
func (b *Builder) partitionStarts() []int {
	points := len(b.hashes)
	if len(b.starts) != b.settings.Partitions {
		b.starts = b.searchStarts()
	}
	start := make([]int, len(b.starts))
	for p, i := range b.starts {
		if start[p] = int(i); start[p] == points {
			start[p] = 0
		}
	}
	// A large ring keeps its starts, to shift them on the next change
	// instead of searching again (see shiftStarts); for a small one the
	// search is cheap and they would cost more than the points.
	if points < b.settings.Partitions {
		b.starts = nil
	}
	return start
}

// searchStarts returns, by partition id, the number of points below the hash
// of the id. The partitions are visited in the order of their hashes, so
// that each search starts where the last one ended.
func (b *Builder) searchStarts() []uint32 {
	starts := make([]uint32, b.settings.Partitions)
	i := 0
	for _, ph := range b.partitionOrder() {
		i = searchFrom(b.hashes, i, ph.hash)
		starts[ph.id] = uint32(i)
	}
	return starts
}

// shiftStarts brings the kept starts up to date with a change of a few
// points, hashes (sorted), added (by) or removed (-1): a partition's start
// moves by the number of them below its hash. The searches over millions
// of points took a quarter of a rebuild at 10,000 instances.
func (b *Builder) shiftStarts(hashes []uint64, by int) {
	if len(b.starts) != b.settings.Partitions {
		return
	}
	k := 0
	for _, ph := range b.partitionOrder() {
		for k < len(hashes) && hashes[k] < ph.hash {
			k++
		}
		b.starts[ph.id] = uint32(int(b.starts[ph.id]) + by*k)
	}
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
