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
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
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
type Ring struct {
	custom     Hasher // nil: xxhash
	partitions uint64
	width      int      // candidates kept per partition
	table      []string // partitions × width; table[p*width] is p's owner
	instances  []string // sorted
	owned      []int    // partitions owned, aligned with instances
}

// Owner returns the instance that owns key, and false when the ring is empty.
func (r *Ring) Owner(key string) (string, bool) {
	if r == nil || r.width == 0 {
		return "", false
	}
	return r.table[r.partitionOfString(key)*uint64(r.width)], true
}

// OwnerBytes is Owner for a key that arrives as bytes (no conversion copy).
func (r *Ring) OwnerBytes(key []byte) (string, bool) {
	if r == nil || r.width == 0 {
		return "", false
	}
	return r.table[r.partitionOf(key)*uint64(r.width)], true
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
	start := p * uint64(r.width)
	return r.table[start : start+uint64(n) : start+uint64(n)]
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

// Builder turns instance sets into Rings. It keeps the sorted virtual points
// of the last set, so that a change of a few instances re-hashes only those;
// the result depends only on the set. A Builder is not safe for concurrent
// use: one goroutine rebuilds, many read the Rings it returns.
//
// The placement is consistent's (v1.0.0, bounded loads), partition for
// partition; TestOwnerMatchesConsistent holds it to the library. It is
// computed here because the library's New re-sorts every point after each
// member it adds: 0.8 s at 1,000 instances with 20 points each, 18.6 s with
// 200; this builds 1,000 instances with 256 points in about 150 ms.
type Builder struct {
	settings Settings
	hasher   Hasher
	current  map[string]struct{}
	points   []point // the virtual points of current, sorted
}

type point struct {
	hash     uint64
	instance string
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
	return &Builder{settings: s, hasher: h, current: map[string]struct{}{}}, nil
}

// ErrInvalidInstance is returned for an empty instance name.
var ErrInvalidInstance = errors.New("ring: empty instance name")

// Build returns the Ring for exactly this set of instances (duplicates are
// ignored). It is idempotent.
func (b *Builder) Build(instances []string) (*Ring, error) {
	want := make(map[string]struct{}, len(instances))
	for _, inst := range instances {
		if inst == "" {
			return nil, ErrInvalidInstance
		}
		want[inst] = struct{}{}
	}
	b.place(want)
	return b.snapshot(), nil
}

// place brings the sorted virtual points to the set want: the leavers'
// points are dropped and the joiners' merged in.
func (b *Builder) place(want map[string]struct{}) {
	gone := map[string]struct{}{}
	for inst := range b.current {
		if _, ok := want[inst]; !ok {
			gone[inst] = struct{}{}
		}
	}
	var fresh []point
	for inst := range want {
		if _, ok := b.current[inst]; !ok {
			fresh = b.appendPoints(fresh, inst)
		}
	}
	b.current = want
	if len(gone) > 0 {
		b.points = slices.DeleteFunc(b.points, func(pt point) bool {
			_, ok := gone[pt.instance]
			return ok
		})
	}
	if len(fresh) > 0 {
		sortPoints(fresh)
		b.points = mergePoints(b.points, fresh)
	}
}

// appendPoints appends inst's virtual points: the same ones consistent
// places (its replicaKey is "<i>:<name>").
func (b *Builder) appendPoints(dst []point, inst string) []point {
	key := make([]byte, 0, len(inst)+8)
	for i := 0; i < b.settings.ReplicationFactor; i++ {
		key = append(strconv.AppendInt(key[:0], int64(i), 10), ':')
		key = append(key, inst...)
		dst = append(dst, point{b.hasher.Sum64(key), inst})
	}
	return dst
}

// Points that share a hash are ordered by instance, so that the ring depends
// only on the set. (consistent keeps one owner for such a hash, whichever
// member it added last: the one place where its placement depends on order.
// With 64-bit hashes it takes about a billion points to expect one.)
func comparePoints(a, b point) int {
	if c := cmp.Compare(a.hash, b.hash); c != 0 {
		return c
	}
	return strings.Compare(a.instance, b.instance)
}

func sortPoints(pts []point) { slices.SortFunc(pts, comparePoints) }

// mergePoints merges two sorted point lists.
func mergePoints(a, b []point) []point {
	out := make([]point, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if comparePoints(a[0], b[0]) <= 0 {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return append(append(out, a...), b...)
}

// snapshot places every partition and copies the result into an immutable
// Ring.
func (b *Builder) snapshot() *Ring {
	r := &Ring{custom: b.settings.Hasher, partitions: uint64(b.settings.Partitions)}
	if len(b.current) == 0 {
		return r
	}
	r.instances = make([]string, 0, len(b.current))
	for inst := range b.current {
		r.instances = append(r.instances, inst)
	}
	sort.Strings(r.instances)
	index := make(map[string]int, len(r.instances))
	for i, inst := range r.instances {
		index[inst] = i
	}
	// Each point's instance as an index, so that the walks below compare ints.
	at := make([]int, len(b.points))
	for i, pt := range b.points {
		at[i] = index[pt.instance]
	}

	// A partition starts at the first point at or after the hash of its id
	// (little-endian, as consistent hashes it), wrapping around.
	start := make([]int, b.settings.Partitions)
	var id [8]byte
	for p := range start {
		binary.LittleEndian.PutUint64(id[:], uint64(p))
		h := b.hasher.Sum64(id[:])
		i, _ := slices.BinarySearchFunc(b.points, h, func(pt point, h uint64) int { return cmp.Compare(pt.hash, h) })
		start[p] = i % len(b.points)
	}

	// Bounded loads, as consistent distributes them: partitions in id order,
	// each to the first instance clockwise from its start that is below the
	// cap, ceil(Load × partitions / instances). The cap times the instance
	// count is at least the partition count, so the walk always ends.
	limit := int(math.Ceil(float64(b.settings.Partitions) / float64(len(r.instances)) * b.settings.Load))
	r.owned = make([]int, len(r.instances))
	r.width = min(MaxCandidates, len(r.instances))
	r.table = make([]string, b.settings.Partitions*r.width)
	row := make([]int, 0, r.width)
	for p, i := range start {
		for r.owned[at[i]] >= limit {
			i = (i + 1) % len(at)
		}
		owner := at[i]
		r.owned[owner]++

		// The candidates after the owner: the distinct instances met walking
		// clockwise from the partition's start.
		row = append(row[:0], owner)
		for step, j := 0, start[p]; len(row) < r.width && step < len(at); step++ {
			if !slices.Contains(row, at[j]) {
				row = append(row, at[j])
			}
			j = (j + 1) % len(at)
		}
		for k, inst := range row {
			r.table[p*r.width+k] = r.instances[inst]
		}
	}
	return r
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
	out := make([]uint32, len(r.table))
	for i, inst := range r.table {
		out[i] = index[inst]
	}
	return out
}

// Moved is the fraction of keys whose owner differs between rings a and b
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
	for p := range a.partitions {
		if a.table[p*uint64(wa)] != b.table[p*uint64(wb)] {
			moved++
		}
	}
	return float64(moved) / float64(a.partitions)
}
