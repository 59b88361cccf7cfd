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
		hosts := make([]string, 0, len(idx.backends))
		for h := range idx.backends {
			hosts = append(hosts, h)
		}
		slices.SortFunc(hosts, strings.Compare)
		for _, h := range hosts {
			if !yield(h, idx.backends[h][0]) {
				return
			}
		}
	}
}
