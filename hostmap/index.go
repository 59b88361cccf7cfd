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
//
// Each shard, exact hosts and wildcards alike, has a filter: most lookups
// are for hosts without an override, and one filter word answers each probe
// without the map. A shard of up to smallShard entries (every shard of a
// table of a few thousand) keeps its whole filter in words, so that the
// lookups of such a table read one word of an 8 KiB array, which stays in
// the first-level cache; a larger one's words entry is filterInBig and its
// filter, sized for its entries (near 2 bytes an override), is in big.
type index struct {
	words    [numShards]uint64
	big      [numShards][]uint64            // nil for a small shard
	backends [numShards]map[string][]string // host -> one-element slice of its backend
	count    int                            // live overrides
	// wildDepths has bit d set when some wildcard "*.x" has d labels after
	// the "*.": suffixes of other depths are never hashed.
	wildDepths uint64
	tails      tailFilter // the wildcards' tails, when !wildShort
	wildShort  bool       // some wildcard's x is shorter than 8 bytes
	// gen counts the indexes published by this table (see Live).
	gen uint64
}

const (
	shardBits = 10
	numShards = 1 << shardBits
	// smallShard: 4 entries set at most 12 of a word's 64 bits, and a
	// probe for a host not in the shard passes under 1% of the time.
	smallShard = 4
	// filterEntriesPerWord: with 2 to 4 entries a word and 3 bits an
	// entry, a probe for a host not in the shard passes (and costs a map
	// probe) about 1% of the time.
	filterEntriesPerWord = 4
	// filterInBig marks a shard whose filter is in index.big: no small
	// filter has every bit set.
	filterInBig = ^uint64(0)
)

// Filter bits. A shard is picked by the hash's top bits, the word of a big
// filter by the middle ones and the 3 bits in the word by the low 18: a
// probe reads one word.
func shardOf(h uint64) uint64 { return h >> (64 - shardBits) }

func filterBits(h uint64) uint64 { return 1<<(h&63) | 1<<(h>>6&63) | 1<<(h>>12&63) }

func filterWord(f []uint64, h uint64) *uint64 { return &f[h>>24&uint64(len(f)-1)] }

// mayHave is false when shard s has no host of hash h.
func (idx *index) mayHave(s, h uint64) bool {
	m := filterBits(h)
	if w := idx.words[s]; w != filterInBig {
		return w&m == m
	}
	return *filterWord(idx.big[s], h)&m == m
}

// setShard installs backends as shard s, with its filter.
func (idx *index) setShard(s uint64, backends map[string][]string) {
	idx.backends[s] = backends
	idx.words[s], idx.big[s] = 0, nil
	if len(backends) <= smallShard {
		for h := range backends {
			idx.words[s] |= filterBits(hostHash(h))
		}
		return
	}
	f := make([]uint64, 1<<bits.Len(uint((len(backends)-1)/filterEntriesPerWord)))
	for h := range backends {
		fh := hostHash(h)
		*filterWord(f, fh) |= filterBits(fh)
	}
	idx.words[s], idx.big[s] = filterInBig, f
}

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
// copying it: it sets the case bit (0x20) of every byte (foldWord), which
// makes an upper-case letter its lower-case one and leaves a lower-case one
// alone. The few other bytes it conflates ('@' and '`', '[' and '{', ...)
// only cost a map probe. Words are read eight bytes at a time, the last ones
// overlapping, and multiplied in independent pairs (as wyhash does), so that
// a host of up to 32 bytes costs three multiplications of which two run
// side by side. It need only spread hosts over shards and filter bits: every
// candidate is confirmed in a map.
func hashLower(seed uint64, b []byte) uint64 {
	n := len(b)
	h := seed ^ uint64(n)*0xff51afd7ed558ccd
	for len(b) > 32 {
		h = mixWord(foldWord(binary.LittleEndian.Uint64(b))^h, foldWord(binary.LittleEndian.Uint64(b[8:]))^0xa0761d6478bd642f) ^
			mixWord(foldWord(binary.LittleEndian.Uint64(b[16:]))^0xe7037ed1a0b428db, foldWord(binary.LittleEndian.Uint64(b[24:]))^h)
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
	h = mixWord(foldWord(w0)^h, foldWord(w1)^0xa0761d6478bd642f) ^
		mixWord(foldWord(w2)^0xe7037ed1a0b428db, foldWord(w3)^h)
	return mixWord(h^0x8ebc6af09c88c6e3, uint64(n)^0x589965cc75374cc3)
}

// mixWord is wyhash's mix: the two halves of the 128-bit product, folded.
func mixWord(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// Bytes of a word at a time (SWAR).
const (
	ones = 0x0101010101010101
	lows = 0x7f7f7f7f7f7f7f7f
)

// foldWord sets the case bit of the eight bytes of w: ASCII letters hash
// alike whatever their case, at one instruction a word.
func foldWord(w uint64) uint64 { return w | ones*0x20 }

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

// dotsLow is dotsOf(host)[0] for a host of 8 to 64 bytes: the last,
// partial word is read overlapping the one before it.
func dotsLow(host []byte) uint64 {
	var dots uint64
	i := 0
	for ; i+8 <= len(host); i += 8 {
		dots |= packHighs(bytesOf(binary.LittleEndian.Uint64(host[i:]), '.')) << i
	}
	if r := len(host) - i; r > 0 {
		w := binary.LittleEndian.Uint64(host[len(host)-8:]) >> (64 - 8*r) // its last r bytes
		dots |= packHighs(bytesOf(w, '.')) << i
	}
	return dots
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
	if s := shardOf(h); idx.mayHave(s, h) {
		if b := find(idx.backends[s], host, 0); b != nil {
			return b
		}
	}
	if idx.wildDepths == 0 {
		return nil
	}
	if n > 64 {
		return idx.matchWildLong(host)
	}
	if !idx.wildShort {
		// Every wildcard "*.x" has an x of 8 bytes or more, so the host
		// ends in the last 8 bytes of one of them, after 2 bytes at least.
		if n < 10 || !idx.tails.mayHave(tailOf(host)) {
			return nil
		}
	} else if n < 8 {
		return idx.matchWildLong(host)
	}
	// The suffix after a dot has as many labels as there are dots from it
	// to the end: walk the dots from the left, nearest (deepest) wildcard
	// first, and hash only the suffixes of a depth some wildcard has. A
	// dot at 0 starts no suffix: a wildcard stands for at least one byte.
	dots := dotsLow(host) &^ 1
	labels := bits.OnesCount64(dots)
	for m := dots; m != 0; m &= m - 1 {
		if idx.wildDepths&(1<<labels) != 0 {
			if b := idx.matchWild(host[bits.TrailingZeros64(m)+1:]); b != nil {
				return b
			}
		}
		labels--
	}
	return nil
}

// tailOf is the last 8 bytes of host (at least 8), case folded.
func tailOf(host []byte) uint64 {
	return foldWord(binary.LittleEndian.Uint64(host[len(host)-8:]))
}

// tailFilter holds the last 8 bytes (tailOf) of the x of every wildcard
// "*.x": a host whose last 8 bytes are none of them matches no wildcard,
// and the common miss costs one word instead of a hash for each suffix
// depth. It is a filter of 256 words of which a probe reads one.
type tailFilter [tailWords]uint64

const tailWords = 256

// tailBits are the two bits of tail in the filter (bit>>6 its word, bit&63
// its place there), both in one word; they may be the same bit.
func tailBits(tail uint64) (b0, b1 uint64) {
	h := mixWord(tail^0x9fb21c651e98df25, 0xd6e8feb86659fd93)
	word := h >> 56 % tailWords
	return word<<6 | h&63, word<<6 | h>>6&63
}

func (f *tailFilter) mayHave(tail uint64) bool {
	b0, b1 := tailBits(tail)
	m := uint64(1)<<(b0&63) | 1<<(b1&63)
	return f[b0>>6]&m == m
}

// matchWild answers the wildcard "*." + suffix, if there is one.
func (idx *index) matchWild(suffix []byte) []string {
	h := hashLower(wildSeed, suffix)
	if s := shardOf(h); idx.mayHave(s, h) {
		return find(idx.backends[s], suffix, 2)
	}
	return nil
}

// matchWildLong is the wildcard walk of Match for hosts of more than 64
// bytes: every dot from the left, nearest first. A wildcard of 63 labels
// or more, which index.wildDepths does not tell apart, is tried for every
// such suffix.
func (idx *index) matchWildLong(host []byte) []string {
	dots := dotsOf(host)
	dots[0] &^= 1 // a dot at 0 starts no suffix and counts no label
	labels := bits.OnesCount64(dots[0]) + bits.OnesCount64(dots[1]) + bits.OnesCount64(dots[2]) + bits.OnesCount64(dots[3])
	for word := range dots {
		for m := dots[word]; m != 0; m &= m - 1 {
			if idx.wildDepths&(1<<min(labels, 63)) != 0 {
				if b := idx.matchWild(host[word<<6+bits.TrailingZeros64(m)+1:]); b != nil {
					return b
				}
			}
			labels-- // labels after the next dot
		}
	}
	return nil
}

// find probes backends for host lower-cased, after "*." when wild is 2. It
// is kept out of Match so that its buffer is set up only for the few
// lookups that pass the filter.
//
//go:noinline
func find(backends map[string][]string, host []byte, wild int) []string {
	var buf [MaxHostLen + 2]byte
	buf[0], buf[1] = '*', '.'
	for i, c := range host {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[2+i] = c
	}
	return backends[string(buf[2-wild:2+len(host)])]
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
// changed are rebuilt from t.entries, filters included, and every other
// shard is shared with the current index: a write costs what its shards
// hold, not the table. With changed nil every shard is built (Open).
func (t *Table) publishLocked(changed []string) {
	next := &index{}
	old := t.index.Load()
	if old != nil {
		*next = *old
		next.gen = old.gen + 1
	}
	if changed == nil {
		next.count, t.wildCounts = 0, [64]int{}
		next.words, next.big, next.backends = [numShards]uint64{}, [numShards][]uint64{}, [numShards]map[string][]string{}
		next.tails, t.tailCounts, t.wildShort = tailFilter{}, nil, 0
		changed = slices.Collect(maps.Keys(t.entries))
	}
	touched := make(map[uint64][]string, min(len(changed), numShards)) // shard -> its changed hosts
	for _, h := range changed {
		s := shardOf(hostHash(h))
		touched[s] = append(touched[s], h)
	}
	for s, hosts := range touched {
		prev := next.backends[s]
		backends := make(map[string][]string, len(prev)+len(hosts))
		for h, b := range prev {
			backends[h] = b
		}
		for _, h := range hosts {
			e, ok := t.entries[h]
			live := ok && e.Backend != ""
			if _, had := backends[h]; had {
				next.count--
				t.wildCounts[wildLabels(h)]--
				t.countTail(&next.tails, h, -1)
			}
			if !live {
				delete(backends, h)
				continue
			}
			if b, ok := prev[h]; ok && b[0] == e.Backend {
				backends[h] = b // reuse: no allocation per unchanged entry
			} else {
				backends[h] = []string{e.Backend}
			}
			next.count++
			t.wildCounts[wildLabels(h)]++
			t.countTail(&next.tails, h, 1)
		}
		next.setShard(s, backends)
	}
	// wildCounts[0] counts exact hosts, which set no bit.
	next.wildDepths = 0
	for d := 1; d < len(t.wildCounts); d++ {
		if t.wildCounts[d] > 0 {
			next.wildDepths |= 1 << d
		}
	}
	next.wildShort = t.wildShort > 0
	t.index.Store(next)
	t.state = nil
	if fn := t.onPublish.Load(); fn != nil && *fn != nil {
		(*fn)()
	}
}

// countTail counts wildcard host in or out (by) of the tail filter: a bit
// is set while some live wildcard sets it, so that a write changes two
// counters and never rebuilds the filter. A wildcard whose x is shorter
// than 8 bytes has no tail and is counted in t.wildShort.
func (t *Table) countTail(f *tailFilter, host string, by int32) {
	rest, ok := strings.CutPrefix(host, "*.")
	if !ok {
		return
	}
	if len(rest) < 8 {
		t.wildShort += int(by)
		return
	}
	if t.tailCounts == nil {
		t.tailCounts = make([]int32, tailWords*64)
	}
	b0, b1 := tailBits(tailOf([]byte(rest)))
	t.tailCounts[b0] += by
	if b1 != b0 {
		t.tailCounts[b1] += by
	}
	for _, b := range [2]uint64{b0, b1} {
		if t.tailCounts[b] > 0 {
			f[b>>6] |= 1 << (b & 63)
		} else {
			f[b>>6] &^= 1 << (b & 63)
		}
	}
}
