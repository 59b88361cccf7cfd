package hostmap

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"strings"
)

// index is an immutable view of the live overrides, split into shards by
// the hash of the host so that a write copies only the shards it touches:
// O(n/numShards) per changed host instead of O(n), whatever the table's size.
type index struct {
	shards [numShards]*shard // never nil
	count  int               // live overrides
	// wildDepths has bit d set when some wildcard "*.x" has d labels after
	// the "*.": suffixes of other depths are never hashed.
	wildDepths uint64
	// gen counts the indexes published by this table (see Live).
	gen uint64
}

// shard holds the live overrides whose host hashes to it, and a filter with
// one bit set for each: most lookups are for hosts without an override, and
// one bit test answers them without probing the map.
type shard struct {
	filter   [shardFilterWords]uint64
	backends map[string][]string // host -> one-element slice of its backend
}

const (
	shardBits = 10
	numShards = 1 << shardBits
	// shardFilterWords: 2,048 bits a shard keep false positives (which
	// cost one map probe) near 5% at 100 hosts a shard, 100,000 in all.
	shardFilterWords = 32
)

var emptyShard = &shard{}

func (sh *shard) mayHave(h uint64) bool {
	return sh.filter[(h>>6)%shardFilterWords]&(1<<(h&63)) != 0
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

func shardOf(h uint64) uint64 { return h >> (64 - shardBits) }

// hashLower hashes b as if its ASCII letters were lower-case, eight bytes at
// a step, without copying it. It need only spread hosts over shards and
// filter bits; it is not exposed to collision attacks beyond a longer
// filter walk, since every candidate is confirmed in a map.
func hashLower(seed uint64, b []byte) uint64 {
	h := seed ^ uint64(len(b))*0xff51afd7ed558ccd
	for len(b) >= 8 {
		h = mixWord(h, lowerWord(binary.LittleEndian.Uint64(b)))
		b = b[8:]
	}
	if len(b) > 0 {
		var w uint64
		if len(b) >= 4 {
			w = uint64(binary.LittleEndian.Uint32(b)) | uint64(binary.LittleEndian.Uint32(b[len(b)-4:]))<<32
		} else {
			w = uint64(b[0]) | uint64(b[len(b)/2])<<8 | uint64(b[len(b)-1])<<16
		}
		h = mixWord(h, lowerWord(w))
	}
	// Final avalanche (murmur3's fmix64): shard and filter bits come from
	// both ends of h.
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
}

func mixWord(h, w uint64) uint64 {
	hi, lo := bits.Mul64(h^w, 0xa0761d6478bd642f)
	return hi ^ lo
}

// lowerWord lower-cases the ASCII letters among the eight bytes of w.
func lowerWord(w uint64) uint64 {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	low7 := w &^ high
	atLeastA := low7 + ones*(0x80-'A')
	pastZ := low7 + ones*(0x80-'Z'-1)
	upper := (atLeastA &^ pastZ) & high &^ w
	return w | upper>>2 // 0x80 >> 2 is 0x20, the case bit
}

// Match returns the override backend for a lookup key (README: How it decides: the key's
// host part, lower-cased, without :port; exact host first, then the nearest
// "*." wildcard) as a one-element slice, or nil. It never locks or allocates.
func (t *Table) Match(key []byte) []string {
	idx := t.index.Load()
	if idx.count == 0 {
		return nil
	}
	host := hostOf(key)
	n := len(host)
	if n == 0 || n > MaxHostLen {
		return nil
	}
	h := hashLower(exactSeed, host)
	if sh := idx.shards[shardOf(h)]; sh.mayHave(h) {
		if b := sh.find(host, 0); b != nil {
			return b
		}
	}
	if idx.wildDepths == 0 {
		return nil
	}
	// Each dot from the left starts a shorter suffix: the first wildcard
	// found is the nearest. A dot at 0 starts no suffix (a wildcard stands
	// for at least one byte) and counts no label.
	labels := 1 + bytes.Count(host[1:], []byte{'.'})
	for i := 1; i < n; i++ {
		d := bytes.IndexByte(host[i:], '.')
		if d < 0 {
			break
		}
		i += d
		labels-- // labels after this dot
		if idx.wildDepths&(1<<min(labels, 63)) == 0 {
			continue
		}
		suffix := host[i+1:]
		h := hashLower(wildSeed, suffix)
		if sh := idx.shards[shardOf(h)]; sh.mayHave(h) {
			if b := sh.find(suffix, 2); b != nil {
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
	var touched map[uint64][]string // shard -> its changed hosts
	if changed == nil {
		next.count, t.wildCounts = 0, [64]int{}
		touched = make(map[uint64][]string, numShards)
		for h := range t.entries {
			s := shardOf(hostHash(h))
			touched[s] = append(touched[s], h)
		}
		for s := range next.shards {
			next.shards[s] = emptyShard
		}
	} else {
		touched = make(map[uint64][]string, min(len(changed), numShards))
		for _, h := range changed {
			s := shardOf(hostHash(h))
			touched[s] = append(touched[s], h)
		}
	}
	for s, hosts := range touched {
		prev := next.shards[s]
		backends := make(map[string][]string, len(prev.backends)+len(hosts))
		for h, b := range prev.backends {
			backends[h] = b
		}
		for _, h := range hosts {
			e, ok := t.entries[h]
			if _, had := backends[h]; had {
				next.count--
				t.wildCounts[wildLabels(h)]--
			}
			if !ok || e.Backend == "" {
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
			fh := hostHash(h)
			sh.filter[(fh>>6)%shardFilterWords] |= 1 << (fh & 63)
		}
		next.shards[s] = sh
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
}
