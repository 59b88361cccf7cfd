package hostmap

import (
	"iter"
	"slices"
	"strings"
)

// Live returns the published overrides as one consistent snapshot: a
// generation number, which changes whenever what Match answers may change,
// and the live host -> backend pairs sorted by host. A router outside
// ringman (nginx/ringman.lua, through RING.TABLE) copies them and refreshes
// its copy when the generation moves.
func (t *Table) Live() (uint64, iter.Seq2[string, string]) {
	idx := t.index.Load()
	return idx.gen, func(yield func(host, backend string) bool) {
		type pair struct{ host, backend string }
		all := make([]pair, 0, idx.count)
		for _, backends := range idx.backends {
			for h, b := range backends {
				all = append(all, pair{h, b[0]})
			}
		}
		slices.SortFunc(all, func(a, b pair) int { return strings.Compare(a.host, b.host) })
		for _, p := range all {
			if !yield(p.host, p.backend) {
				return
			}
		}
	}
}
