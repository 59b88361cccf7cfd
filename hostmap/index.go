package hostmap

import (
	"encoding/binary"
	"maps"
	"math/bits"
	"slices"
	"strings"
)

// index is an immutable view of the live overrides, split into shards by
// the hash of the host so that a write copies only the shards it touches:
// O(n/numShards) per changed host instead of O(n), whatever the table's size.
type index struct {
	shards [numShards]*shard // never nil
	// wild filters the wildcards apart from the exact hosts: there are
	// usually few, so it stays in the first-level cache and a lookup
	// whose host has none pays one cached bit test per suffix depth.
	wild  [wildPages]wildPage
	count int // live overrides
	// wildDepths has bit d set when some wildcard "*.x" has d labels after
	// the "*.": suffixes of other depths are never hashed.
	wildDepths uint64
	// gen counts the indexes published by this table (see Live).
	gen uint64
}

// shard holds the live overrides whose host hashes to it, and a filter with
// one bit set for each exact host: most lookups are for hosts without an
// override, and one bit test answers them without probing the map.
type shard struct {
	filter   [shardFilterWords]uint64
	backends map[string][]string // host -> one-element slice of its backend
}

// wildPage is one page of the wildcard filter; a wildcard write rebuilds
// only its page.
type wildPage [wildPageWords]uint64

const (
	shardBits = 10
	numShards = 1 << shardBits
	// shardFilterWords: 2,048 bits a shard keep false positives (which
	// cost one map probe) near 5% at 100 hosts a shard, 100,000 in all.
	shardFilterWords = 32
	// The wildcard filter: 65,536 bits, 8 KiB, in pages of 4,096.
	wildPageBits  = 4
	wildPages     = 1 << wildPageBits
	wildPageWords = 64
)

var emptyShard = &shard{}

// Filter bits. A shard is picked by the hash's top bits; the bit within
// its filter and the wildcard filter's page and bit come from the others.
func shardOf(h uint64) uint64 { return h >> (64 - shardBits) }

func (sh *shard) mayHave(h uint64) bool {
	return sh.filter[(h>>6)%shardFilterWords]&(1<<(h&63)) != 0
}

func wildPageOf(h uint64) uint64 { return (h >> 40) % wildPages }

func (p *wildPage) mayHave(h uint64) bool {
	return p[(h>>6)%wildPageWords]&(1<<(h&63)) != 0
}

func (p *wildPage) add(h uint64) { p[(h>>6)%wildPageWords] |= 1 << (h & 63) }

// Hash seeds: a wildcard "*.x" is filed under the hash of x with its own
// seed, so that a lookup hashes the suffixes of its host in place, without
// building "*." + suffix.
const (
	exactSeed = 0x9e3779b97f4a7c15
	wildSeed  = 0xc2b2ae3d27d4eb4f
)

// hostHash is the hash a stored host (lower-case) is filed under.
func hostHash(host string) uint64 {
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		return hashLower(wildSeed, []byte(rest))
	}
	return hashLower(exactSeed, []byte(host))
}

// hashLower hashes b as if its ASCII letters were lower-case, without
// copying it. Words are read eight bytes at a time, the last ones
// overlapping, and multiplied in independent pairs (as wyhash does), so that
// a host of up to 32 bytes costs three multiplications of which two run
// side by side. It need only spread hosts over shards and filter bits: every
// candidate is confirmed in a map.
func hashLower(seed uint64, b []byte) uint64 {
	n := len(b)
	h := seed ^ uint64(n)*0xff51afd7ed558ccd
	for len(b) > 32 {
		h = mixWord(lowerWord(binary.LittleEndian.Uint64(b))^h, lowerWord(binary.LittleEndian.Uint64(b[8:]))^0xa0761d6478bd642f) ^
			mixWord(lowerWord(binary.LittleEndian.Uint64(b[16:]))^0xe7037ed1a0b428db, lowerWord(binary.LittleEndian.Uint64(b[24:]))^h)
		b = b[32:]
	}
	var w0, w1, w2, w3 uint64
	switch m := len(b); {
	case m >= 16:
		w0, w1 = binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])
		w2, w3 = binary.LittleEndian.Uint64(b[m-16:]), binary.LittleEndian.Uint64(b[m-8:])
	case m >= 8:
		w0, w1 = binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[m-8:])
	case m >= 4:
		w0 = uint64(binary.LittleEndian.Uint32(b)) | uint64(binary.LittleEndian.Uint32(b[m-4:]))<<32
	case m > 0:
		w0 = uint64(b[0]) | uint64(b[m/2])<<8 | uint64(b[m-1])<<16
	}
	h = mixWord(lowerWord(w0)^h, lowerWord(w1)^0xa0761d6478bd642f) ^
		mixWord(lowerWord(w2)^0xe7037ed1a0b428db, lowerWord(w3)^h)
	return mixWord(h^0x8ebc6af09c88c6e3, uint64(n)^0x589965cc75374cc3)
}

// mixWord is wyhash's mix: the two halves of the 128-bit product, folded.
func mixWord(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// Bytes of a word at a time (SWAR).
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
	lows  = 0x7f7f7f7f7f7f7f7f
)

// lowerWord lower-cases the ASCII letters among the eight bytes of w.
func lowerWord(w uint64) uint64 {
	low7 := w & lows
	atLeastA := low7 + ones*(0x80-'A')
	pastZ := low7 + ones*(0x80-'Z'-1)
	upper := (atLeastA &^ pastZ) & highs &^ w
	return w | upper>>2 // 0x80 >> 2 is 0x20, the case bit
}

// bytesOf has the high bit set of each byte of w that is c, and no other.
func bytesOf(w uint64, c byte) uint64 {
	x := w ^ ones*uint64(c)
	return ^((x&lows + lows) | x | lows)
}

// packHighs gathers the high bits of the eight bytes of m into bits 0-7.
func packHighs(m uint64) uint64 { return (m >> 7) * 0x0102040810204080 >> 56 }

// hostLen is len(hostOf(key)), found eight bytes at a step, or -1 when the
// host part is longer than MaxHostLen.
func hostLen(key []byte) int {
	if len(key) == 0 || key[0] == '/' {
		return 0
	}
	n := len(key)
	i := 0
	for ; i+8 <= len(key); i += 8 {
		w := binary.LittleEndian.Uint64(key[i:])
		if end := bytesOf(w, '/') | bytesOf(w, ':'); end != 0 {
			n = i + bits.TrailingZeros64(end)/8
			break
		}
		if i > MaxHostLen {
			return -1 // no end in reach
		}
	}
	if n == len(key) {
		for ; i < len(key); i++ {
			if c := key[i]; c == '/' || c == ':' {
				n = i
				break
			}
		}
	}
	if n > 0 && key[n-1] == '.' {
		n-- // an absolute name, "example.com."
	}
	if n > MaxHostLen {
		return -1
	}
	return n
}

// dotsOf returns where the dots of host are (bit i: host[i] is '.'),
// eight bytes at a step.
func dotsOf(host []byte) (dots [4]uint64) {
	i := 0
	for ; i+8 <= len(host); i += 8 {
		dots[i>>6] |= packHighs(bytesOf(binary.LittleEndian.Uint64(host[i:]), '.')) << (i & 63)
	}
	for ; i < len(host); i++ {
		if host[i] == '.' {
			dots[i>>6] |= 1 << (i & 63)
		}
	}
	return dots
}

// Match returns the override backend for a lookup key (README: How it decides: the key's
// host part, lower-cased, without :port; exact host first, then the nearest
// "*." wildcard) as a one-element slice, or nil. It never locks or allocates.
func (t *Table) Match(key []byte) []string {
	idx := t.index.Load()
	if idx.count == 0 {
		return nil
	}
	n := hostLen(key)
	if n <= 0 {
		return nil
	}
	host := key[:n]
	h := hashLower(exactSeed, host)
	if sh := idx.shards[shardOf(h)]; sh.mayHave(h) {
		if b := sh.find(host, 0); b != nil {
			return b
		}
	}
	if idx.wildDepths == 0 {
		return nil
	}
	if idx.wildDepths&(1<<63) != 0 {
		return idx.matchWildAnyDepth(host)
	}
	// The suffix of d labels starts after the d-th dot from the right: find
	// the dots from the right, as far as the deepest wildcard reaches, and
	// try the deepest (nearest) suffix first. A dot at 0 starts no suffix:
	// a wildcard stands for at least one byte.
	deepest := 63 - bits.LeadingZeros64(idx.wildDepths)
	var after [64]uint8 // after[d]: where the suffix of d labels starts
	found := 0
	i := n
	for ; i >= 8 && found < deepest; i -= 8 {
		for m := bytesOf(binary.LittleEndian.Uint64(host[i-8:]), '.'); m != 0 && found < deepest; {
			top := 63 - bits.LeadingZeros64(m)
			m &^= 1 << top
			if p := i - 8 + top/8; p > 0 {
				found++
				after[found] = uint8(p + 1)
			}
		}
	}
	if i < 8 {
		for i--; i > 0 && found < deepest; i-- {
			if host[i] == '.' {
				found++
				after[found] = uint8(i + 1)
			}
		}
	}
	for d := found; d > 0; d-- {
		if idx.wildDepths&(1<<d) == 0 {
			continue
		}
		if b := idx.matchWild(host[after[d]:]); b != nil {
			return b
		}
	}
	return nil
}

// matchWild answers the wildcard "*." + suffix, if there is one.
func (idx *index) matchWild(suffix []byte) []string {
	h := hashLower(wildSeed, suffix)
	if !idx.wild[wildPageOf(h)].mayHave(h) {
		return nil
	}
	return idx.shards[shardOf(h)].find(suffix, 2)
}

// matchWildAnyDepth is the wildcard walk of Match for tables with a
// wildcard of 63 labels or more, which index.wildDepths does not tell
// apart: every dot from the left, nearest first.
func (idx *index) matchWildAnyDepth(host []byte) []string {
	dots := dotsOf(host)
	dots[0] &^= 1 // a dot at 0 starts no suffix and counts no label
	labels := 1 + bits.OnesCount64(dots[0]) + bits.OnesCount64(dots[1]) + bits.OnesCount64(dots[2]) + bits.OnesCount64(dots[3])
	for word := range dots {
		for m := dots[word]; m != 0; m &= m - 1 {
			labels-- // labels after this dot
			if idx.wildDepths&(1<<min(labels, 63)) == 0 {
				continue
			}
			if b := idx.matchWild(host[word<<6+bits.TrailingZeros64(m)+1:]); b != nil {
				return b
			}
		}
	}
	return nil
}

// find probes the map for host lower-cased, after "*." when wild is 2. It
// is kept out of Match so that its buffer is set up only for the few
// lookups that pass the filter.
//
//go:noinline
func (sh *shard) find(host []byte, wild int) []string {
	var buf [MaxHostLen + 2]byte
	buf[0], buf[1] = '*', '.'
	for i, c := range host {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[2+i] = c
	}
	return sh.backends[string(buf[2-wild:2+len(host)])]
}

// wildLabels is the number of labels after the "*." of wildcard host (at
// most 63, the last bit of index.wildDepths), or 0 for an exact host.
func wildLabels(host string) int {
	rest, ok := strings.CutPrefix(host, "*.")
	if !ok {
		return 0
	}
	return min(strings.Count(rest, ".")+1, 63)
}

// publishLocked publishes a new index in which the shards of the hosts in
// changed are rebuilt from t.entries and every other shard is shared with
// the current index: a write costs what its shards hold, not the table.
// With changed nil every shard is built (Open).
func (t *Table) publishLocked(changed []string) {
	next := &index{}
	old := t.index.Load()
	if old != nil {
		*next = *old
		next.gen = old.gen + 1
	}
	if changed == nil {
		next.count, t.wildCounts = 0, [64]int{}
		for s := range next.shards {
			next.shards[s] = emptyShard
		}
		for p := range next.wild {
			next.wild[p], t.wildByPage[p] = wildPage{}, nil
		}
		changed = slices.Collect(maps.Keys(t.entries))
	}
	touched := make(map[uint64][]string, min(len(changed), numShards)) // shard -> its changed hosts
	for _, h := range changed {
		s := shardOf(hostHash(h))
		touched[s] = append(touched[s], h)
	}
	var wildTouched [wildPages]bool
	for s, hosts := range touched {
		prev := next.shards[s]
		backends := make(map[string][]string, len(prev.backends)+len(hosts))
		for h, b := range prev.backends {
			backends[h] = b
		}
		for _, h := range hosts {
			e, ok := t.entries[h]
			live := ok && e.Backend != ""
			_, had := backends[h]
			if had {
				next.count--
				t.wildCounts[wildLabels(h)]--
			}
			if labels := wildLabels(h); labels > 0 && had != live {
				hh := hostHash(h)
				p := wildPageOf(hh)
				wildTouched[p] = true
				if live {
					if t.wildByPage[p] == nil {
						t.wildByPage[p] = map[string]uint64{}
					}
					t.wildByPage[p][h] = hh
				} else {
					delete(t.wildByPage[p], h)
				}
			}
			if !live {
				delete(backends, h)
				continue
			}
			if b, ok := prev.backends[h]; ok && b[0] == e.Backend {
				backends[h] = b // reuse: no allocation per unchanged entry
			} else {
				backends[h] = []string{e.Backend}
			}
			next.count++
			t.wildCounts[wildLabels(h)]++
		}
		sh := &shard{backends: backends}
		for h := range backends {
			if wildLabels(h) == 0 { // wildcards are in the wildcard filter
				fh := hostHash(h)
				sh.filter[(fh>>6)%shardFilterWords] |= 1 << (fh & 63)
			}
		}
		next.shards[s] = sh
	}
	for p, dirty := range wildTouched {
		if !dirty {
			continue
		}
		next.wild[p] = wildPage{}
		for _, hh := range t.wildByPage[p] {
			next.wild[p].add(hh)
		}
	}
	// wildCounts[0] counts exact hosts, which set no bit.
	next.wildDepths = 0
	for d := 1; d < len(t.wildCounts); d++ {
		if t.wildCounts[d] > 0 {
			next.wildDepths |= 1 << d
		}
	}
	t.index.Store(next)
	t.state = nil
	if fn := t.onPublish.Load(); fn != nil && *fn != nil {
		(*fn)()
	}
}
