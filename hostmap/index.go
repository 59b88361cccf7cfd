package hostmap

import (
	"bytes"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// index is an immutable view of the live overrides.
type index struct {
	backends map[string][]string // host -> one-element slice of its backend
	// filter has a bit set for the hash of every host in backends. Most
	// lookups are for hosts without an override; one bit test in a small,
	// cache-resident array answers them without probing a large map.
	filter []uint64
	// wildDepths has bit d set when some wildcard "*.x" has d labels after
	// the "*.": suffixes of other depths are never probed.
	wildDepths uint64
	// gen counts the indexes published by this table (see Live).
	gen uint64
}

// filterBitsPerHost sizes the filter: 16 bits a host keep false positives
// (which cost one map probe) near 6%.
const filterBitsPerHost = 16

func (idx *index) mayHave(host []byte) bool {
	h := xxhash.Sum64(host)
	return idx.filter[(h>>6)&uint64(len(idx.filter)-1)]&(1<<(h&63)) != 0
}

func (idx *index) add(host string) {
	h := xxhash.Sum64String(host)
	idx.filter[(h>>6)&uint64(len(idx.filter)-1)] |= 1 << (h & 63)
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		idx.wildDepths |= 1 << min(strings.Count(rest, ".")+1, 63)
	}
}

// Match returns the override backend for a lookup key (README: How it decides: the key's
// host part, lower-cased, without :port; exact host first, then the nearest
// "*." wildcard) as a one-element slice, or nil. It never locks or allocates.
func (t *Table) Match(key []byte) []string {
	idx := t.index.Load()
	if len(idx.backends) == 0 {
		return nil
	}
	host := hostOf(key)
	if len(host) == 0 || len(host) > MaxHostLen {
		return nil
	}
	// buf[1:1+n] is the lower-cased host; buf[i:1+n] with buf[i] = '*' is
	// the wildcard for the suffix that starts at the host's dot i.
	var buf [MaxHostLen + 1]byte
	n := len(host)
	for i, c := range host {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[1+i] = c
	}
	if exact := buf[1 : 1+n]; idx.mayHave(exact) {
		if b, ok := idx.backends[string(exact)]; ok {
			return b
		}
	}
	if idx.wildDepths == 0 {
		return nil
	}
	// Labels after the dot at i (from 1: a wildcard stands for at least
	// one byte), counted without a dot at 0, which the loop skips.
	labels := 1 + bytes.Count(buf[2:1+n], []byte{'.'})
	for i := 1; i < n; i++ {
		if buf[1+i] != '.' {
			continue
		}
		labels-- // labels after this dot
		if idx.wildDepths&(1<<min(labels, 63)) == 0 {
			continue
		}
		buf[i] = '*' // overwrites a byte before the dot, no longer needed
		if w := buf[i : 1+n]; idx.mayHave(w) {
			if b, ok := idx.backends[string(w)]; ok {
				return b
			}
		}
	}
	return nil
}

// publishLocked rebuilds the lookup index from entries: O(n) per write,
// paid by writers so that lookups never wait.
func (t *Table) publishLocked() {
	words := 1
	for words*64 < filterBitsPerHost*len(t.entries) {
		words *= 2
	}
	idx := &index{backends: make(map[string][]string, len(t.entries)), filter: make([]uint64, words)}
	var prev map[string][]string
	if old := t.index.Load(); old != nil {
		prev = old.backends
		idx.gen = old.gen + 1
	}
	for h, e := range t.entries {
		if e.Backend == "" {
			continue
		}
		if b, ok := prev[h]; ok && b[0] == e.Backend {
			idx.backends[h] = b // reuse: no allocation per unchanged entry
		} else {
			idx.backends[h] = []string{e.Backend}
		}
		idx.add(h)
	}
	t.index.Store(idx)
	t.state = nil
}
