// Package ring places keys on the live instances of one service.
//
// It exists so that every router in a pool, given the same set of instances and
// the same Settings, sends a key to the same instance, and so that only about
// 1/n of the keys move when an instance joins or leaves. Placement is
// github.com/buraksezer/consistent (bounded loads) over xxhash; this package
// adds what a router needs on its hot path: an immutable Ring, built off to the
// side and read without locks or allocation.
//
// The package is pure: no network, no logging, no other ringman package.
package ring

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// Algorithm names the placement algorithm. It is part of the Fingerprint: two
// versions of consistent place keys differently, so nodes built against
// different versions must not share a cluster.
const Algorithm = "consistent-v1.0.0"

// Defaults. 16,381 is the largest prime below 2^14. At 1,000 instances every
// instance owns partitions (the fewest measured: 4; 7,919 partitions left about
// 2 of 1,000 instances with none, 271 left 729), and one join or leave still
// rebuilds in milliseconds: every partition is placed again on each change,
// so the cost grows with the partition count.
//
// 256 points per instance keep the load bound out of play in small rings:
// an instance's natural share then rarely reaches 1.25× the average, so a
// leaver takes only its own keys with it. Of 10,000 random rings of 3 or 4
// instances losing one, none moved another key, of 5 instances 2 did (with
// 20 points: 23%, 44% and 60% of 1,000 rings, up to 9% of the keys); at 10
// instances 2 in 1,000 did, at 20 about 1 in 100. TestSmallRingsMoveOnlyTheLeaversKeys
// checks 100 seeded rings of each size from 2 to 5.
const (
	DefaultPartitions        = 16381
	DefaultLoad              = 1.25
	DefaultReplicationFactor = 256
	// MaxCandidates is the longest preference list a Ring keeps per partition.
	MaxCandidates = 8
)

// MinPartitionsPerInstance is the fewest partitions per instance at which
// every instance of a ring can be expected to own some. Below it the load cap
// (ceil(Load × partitions / instances)) lets the instances whose points come
// first fill every partition. Of 10 random rings of 4,093 partitions (256
// points per instance), at 10 per instance none left an instance without
// keys, at 8 one ring left one, at 4 every ring left up to 18, at 2 up to 219
// of 2,046; with more instances than partitions each owner gets one and the
// rest none. At the default 16,381 partitions, 20,000 instances leave 8,189
// idle.
const MinPartitionsPerInstance = 10

// Limits that keep a rebuild bounded in time and memory.
const (
	MaxPartitions        = 1 << 20
	MaxReplicationFactor = 1000
	MaxLoad              = 100.0
)

// Hasher hashes bytes to 64 bits. The default is xxhash; tests use exact fakes.
type Hasher interface {
	Sum64([]byte) uint64
}

// Settings are the ring parameters that must agree across a cluster.
type Settings struct {
	// Partitions is the number of slots keys hash into; each slot has one owner.
	Partitions int
	// Load bounds the busiest instance at Load × the average partition count.
	Load float64
	// ReplicationFactor is the number of virtual points per instance.
	ReplicationFactor int
	// Hasher is nil for xxhash (what production uses).
	Hasher Hasher
}

// DefaultSettings returns the settings ringman ships with.
func DefaultSettings() Settings {
	return Settings{Partitions: DefaultPartitions, Load: DefaultLoad, ReplicationFactor: DefaultReplicationFactor}
}

// Validate reports the first setting that would make placement fail.
func (s Settings) Validate() error {
	switch {
	case s.Partitions < 1 || s.Partitions > MaxPartitions:
		return fmt.Errorf("ring partitions must be between 1 and %d, got %d", MaxPartitions, s.Partitions)
	case math.IsNaN(s.Load) || s.Load < 1 || s.Load > MaxLoad:
		return fmt.Errorf("ring load factor must be between 1 and %g, got %g", MaxLoad, s.Load)
	case s.ReplicationFactor < 1 || s.ReplicationFactor > MaxReplicationFactor:
		return fmt.Errorf("ring replication factor must be between 1 and %d, got %d", MaxReplicationFactor, s.ReplicationFactor)
	}
	return nil
}

// CheckInstances returns an error when n instances are more than s can give
// keys to (fewer than MinPartitionsPerInstance partitions each), naming the
// partition count to use instead. It is advice, not a limit: a Ring of any
// size is built, and Ring.Idle counts the instances left without keys.
// Changing the partition count moves nearly every key, so it is chosen for
// the largest service a cluster expects, not adjusted as services grow.
func (s Settings) CheckInstances(n int) error {
	if n <= 1 || n <= s.Partitions/MinPartitionsPerInstance {
		return nil
	}
	return fmt.Errorf("ring: %d instances on %d partitions (fewer than %d each) leave some instances with no keys; use at least %d partitions",
		n, s.Partitions, MinPartitionsPerInstance, PartitionsFor(n))
}

// PartitionsFor is the partition count for rings of up to n instances: the
// smallest prime with 16 partitions per instance (what the default gives
// 1,000 instances), and never below DefaultPartitions nor above
// MaxPartitions. A prime spreads keys evenly whatever their hashes share.
func PartitionsFor(n int) int {
	if n <= DefaultPartitions/16 {
		return DefaultPartitions
	}
	for p := 16 * min(n, MaxPartitions/16); p <= MaxPartitions; p++ {
		if isPrime(p) {
			return p
		}
	}
	p := MaxPartitions
	for !isPrime(p) {
		p--
	}
	return p
}

func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// HashName names the default key hash, in fingerprints and exported tables.
const HashName = "xxhash64"

// Fingerprint is a short readable description of everything that decides
// placement. Nodes compare fingerprints and refuse peers whose differ.
func (s Settings) Fingerprint() string {
	hash := HashName
	if s.Hasher != nil {
		hash = fmt.Sprintf("%T", s.Hasher)
	}
	return fmt.Sprintf("%s/%s/p%d/l%s/r%d", Algorithm, hash, s.Partitions,
		strconv.FormatFloat(s.Load, 'g', -1, 64), s.ReplicationFactor)
}

// Ring is an immutable placement of keys on one service's instances. Its
// methods never lock or allocate, and are safe for any number of goroutines.
// The zero Ring and a nil *Ring have no instances and answer nothing.
//
// A partition's candidate list follows from its start point and its owner,
// so in a ring with fewer virtual points than partitions (up to 63
// instances at the default settings) partitions share lists: the Ring keeps
// each distinct list once, min(MaxCandidates, instances) names of 16 bytes
// (the names themselves shared), and 2 bytes per partition saying where its
// list starts (4 beyond 65,536 names). Larger rings keep a list per
// partition, Partitions × min(MaxCandidates, instances) names (see listAt).
// At the default partition count that is 0.23 MiB for 8 instances (1,597
// lists), 1 MiB for 63 (8,060) and 2 MiB from 64 up (BenchmarkMemory;
// 1,000 services of 8 instances hold 266 MiB with their Builders,
// router.BenchmarkServicesMemory, 2 GiB when every ring kept a list per
// partition). Its Builder keeps 12 bytes per virtual point besides (16 with
// shared lists), 3 MiB at 1,000 instances.
type Ring struct {
	custom     Hasher // nil: xxhash
	partitions uint64
	width      int      // candidates kept per partition
	lists      []string // candidate lists (addresses), width each, owner first
	at16       []uint16 // by partition, where its list starts in lists, when len(lists) <= 1<<16
	at32       []uint32 // by partition, when lists is longer
	instances  []string // addresses, sorted
	owned      []int    // partitions owned, aligned with instances
	// ids and weights are aligned with instances: nil when every instance
	// is its own ID, and when every weight is 1.
	ids     []string
	weights []float64
}

// describe sets the ring's instances from set (sorted by key), sorted by
// address, and returns where each of set's instances went.
func (r *Ring) describe(set []Instance) (order []int) {
	byAddr := make([]int, len(set))
	for i := range byAddr {
		byAddr[i] = i
	}
	slices.SortFunc(byAddr, func(x, y int) int { return strings.Compare(set[x].Addr, set[y].Addr) })
	order = make([]int, len(set))
	r.instances = make([]string, len(set))
	for at, i := range byAddr {
		order[i] = at
		r.instances[at] = set[i].Addr
		if set[i].ID != "" && set[i].ID != set[i].Addr && r.ids == nil {
			r.ids = make([]string, len(set))
		}
		if set[i].Weight != 1 && r.weights == nil {
			r.weights = make([]float64, len(set))
		}
	}
	for at, i := range byAddr {
		if r.ids != nil {
			r.ids[at] = set[i].key()
		}
		if r.weights != nil {
			r.weights[at] = set[i].Weight
		}
	}
	return order
}

// Describe returns the ring's instances with their IDs and weights, in the
// order of Instances(). It allocates a new slice on each call.
func (r *Ring) Describe() []Instance {
	out := make([]Instance, r.Len())
	for i, addr := range r.Instances() {
		out[i] = Instance{Addr: addr, ID: addr, Weight: 1}
		if r.ids != nil {
			out[i].ID = r.ids[i]
		}
		if r.weights != nil {
			out[i].Weight = r.weights[i]
		}
	}
	return out
}

// listAt is the index in lists of partition p's candidate list. With
// neither at16 nor at32, lists holds every partition's list in partition
// order: a ring with as many points as partitions (64 instances at the
// default settings) or more than half as many distinct lists would save
// little memory by sharing them, and the extra load would slow every
// lookup (by 10% at 100 instances, whose lists do not fit a core's cache
// either way). An offset, not a list number, is stored so that no
// multiplication delays the lookup.
func (r *Ring) listAt(p uint64) uint64 {
	if r.at16 != nil {
		return uint64(r.at16[p])
	}
	if r.at32 != nil {
		return uint64(r.at32[p])
	}
	return p * uint64(r.width)
}

// Owner returns the instance that owns key, and false when the ring is empty.
func (r *Ring) Owner(key string) (string, bool) {
	if r == nil || r.width == 0 {
		return "", false
	}
	return r.lists[r.listAt(r.partitionOfString(key))], true
}

// OwnerBytes is Owner for a key that arrives as bytes (no conversion copy).
func (r *Ring) OwnerBytes(key []byte) (string, bool) {
	if r == nil || r.width == 0 {
		return "", false
	}
	return r.lists[r.listAt(r.partitionOf(key))], true
}

// Candidates returns up to n distinct instances for key in preference order:
// the owner first, then the instances that follow it on the ring (the ones
// most likely to own the key if the owner goes away). The result is shared
// with the Ring and must not be modified.
func (r *Ring) Candidates(key string, n int) []string {
	if r == nil || r.width == 0 || n <= 0 {
		return nil
	}
	return r.row(r.partitionOfString(key), n)
}

// CandidatesBytes is Candidates for a key that arrives as bytes.
func (r *Ring) CandidatesBytes(key []byte, n int) []string {
	if r == nil || r.width == 0 || n <= 0 {
		return nil
	}
	return r.row(r.partitionOf(key), n)
}

func (r *Ring) row(p uint64, n int) []string {
	n = min(n, r.width)
	start := r.listAt(p)
	return r.lists[start : start+uint64(n) : start+uint64(n)]
}

func (r *Ring) partitionOf(key []byte) uint64 {
	if r.custom != nil {
		return r.custom.Sum64(key) % r.partitions
	}
	return xxhash.Sum64(key) % r.partitions
}

func (r *Ring) partitionOfString(key string) uint64 {
	if r.custom != nil {
		return r.custom.Sum64([]byte(key)) % r.partitions
	}
	return xxhash.Sum64String(key) % r.partitions
}

// Len is the number of instances on the ring.
func (r *Ring) Len() int {
	if r == nil {
		return 0
	}
	return len(r.instances)
}

// Instances returns the instances on the ring, sorted. Do not modify it.
func (r *Ring) Instances() []string {
	if r == nil {
		return nil
	}
	return r.instances
}

// Partitions is the partition count the ring was built with (0 for an empty ring).
func (r *Ring) Partitions() int {
	if r == nil || r.width == 0 {
		return 0
	}
	return int(r.partitions)
}

// Idle is the number of instances that own no partition: they are never a
// key's owner (they still appear as candidates). It is 0 unless the ring has
// more instances than its settings give keys to (Settings.CheckInstances).
func (r *Ring) Idle() int {
	if r == nil {
		return 0
	}
	idle := 0
	for _, c := range r.owned {
		if c == 0 {
			idle++
		}
	}
	return idle
}

// Owned returns how many partitions each instance owns, keyed by instance.
func (r *Ring) Owned() map[string]int {
	out := make(map[string]int, r.Len())
	for i, inst := range r.Instances() {
		out[inst] = r.owned[i]
	}
	return out
}

// New builds a Ring over instances in one go. Builders are cheaper when a
// ring changes one instance at a time.
func New(s Settings, instances []string) (*Ring, error) {
	b, err := NewBuilder(s)
	if err != nil {
		return nil, err
	}
	return b.Build(instances)
}

// Hash names the key hash of the ring ("xxhash64"), as Settings.Fingerprint
// does: what a router outside ringman must compute to use IndexTable.
func (r *Ring) Hash() string {
	if r == nil || r.custom == nil {
		return HashName
	}
	return fmt.Sprintf("%T", r.custom)
}

// Width is the number of candidates kept per partition: min(MaxCandidates,
// Len()), and 0 for an empty ring.
func (r *Ring) Width() int {
	if r == nil {
		return 0
	}
	return r.width
}

// IndexTable returns the placement as indexes into Instances(): row p
// (entries p*Width() to (p+1)*Width()-1) lists partition p's candidates,
// owner first, and a key's partition is hash(key) % Partitions(). It is what
// a router outside ringman (nginx/ringman.lua) needs to answer Owner and
// Candidates itself. It allocates a new slice on each call.
func (r *Ring) IndexTable() []uint32 {
	if r == nil || r.width == 0 {
		return nil
	}
	index := make(map[string]uint32, len(r.instances))
	for i, inst := range r.instances {
		index[inst] = uint32(i)
	}
	lists := make([]uint32, len(r.lists))
	for i, inst := range r.lists {
		lists[i] = index[inst]
	}
	out := make([]uint32, 0, r.partitions*uint64(r.width))
	for p := range r.partitions {
		at := r.listAt(p)
		out = append(out, lists[at:at+uint64(r.width)]...)
	}
	return out
}

// idOf maps the ring's addresses to their instances' IDs.
func (r *Ring) idOf() map[string]string {
	out := make(map[string]string, len(r.instances))
	for i, addr := range r.instances {
		out[addr] = addr
		if r.ids != nil {
			out[addr] = r.ids[i]
		}
	}
	return out
}

// Moved is the fraction of keys whose owner (its ID) differs between rings a and b
// (keys spread evenly over partitions, so it is the fraction of partitions
// whose owner changed): what an instance joining or leaving cost the
// services' caches. A ring with no instance owns nothing, so going from or
// to one moves every key (1), and two empty rings move none (0).
func Moved(a, b *Ring) float64 {
	wa, wb := a.Width(), b.Width()
	switch {
	case wa == 0 && wb == 0:
		return 0
	case wa == 0 || wb == 0 || a.partitions != b.partitions:
		return 1
	}
	moved := 0
	if a.ids == nil && b.ids == nil {
		for p := range a.partitions {
			if a.lists[a.listAt(p)] != b.lists[b.listAt(p)] {
				moved++
			}
		}
		return float64(moved) / float64(a.partitions)
	}
	// Keys stay with an instance's ID when its address changes.
	ida, idb := a.idOf(), b.idOf()
	for p := range a.partitions {
		if ida[a.lists[a.listAt(p)]] != idb[b.lists[b.listAt(p)]] {
			moved++
		}
	}
	return float64(moved) / float64(a.partitions)
}
