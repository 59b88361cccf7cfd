package router

import (
	"encoding/binary"
	"errors"
	"iter"
	"strconv"

	"github.com/cespare/xxhash/v2"

	"ringman/ring"
)

// Export is one service's whole answer function, for a router outside
// ringman that answers lookups itself (nginx/ringman.lua, through the RESP
// command RING.TABLE): the key's host part is looked up in the overrides
// first (README: How it decides), and otherwise the key's row of Table, at
// hash(key) % Partitions, lists its candidates, owner first. Following these
// rules gives exactly what Lookup and Candidates answer.
type Export struct {
	// Epoch is a hash of everything below: it changes whenever an answer
	// may change, and nodes with the same rings and overrides export the
	// same epoch, so a copy is refreshed only when it moved.
	Epoch uint64
	// Hash names the key hash ("xxhash64").
	Hash string
	// Partitions and Width are 0 when the service has no live instance.
	Partitions int
	Width      int
	Instances  []string // sorted
	// Table holds Partitions × Width indexes into Instances.
	Table []uint32
	// OverrideHosts and OverrideBackends are the live overrides, sorted by
	// host; wildcards are stored as "*.example.com".
	OverrideHosts    []string
	OverrideBackends []string
}

// OverrideLister is Overrides that can list themselves for Export; hostmap's
// Table is one.
type OverrideLister interface {
	Overrides
	// Live returns a generation that changes whenever Match's answers may,
	// and the live host -> backend pairs, both from one snapshot.
	Live() (uint64, iter.Seq2[string, string])
}

// errNotListable is Export's answer when overrides are set but cannot be
// listed: an export without them would answer differently from Lookup.
var errNotListable = errors.New("router: the overrides cannot be exported")

// exported is a cached Export with what it was built from.
type exported struct {
	ring *ring.Ring
	gen  uint64
	e    *Export
}

// noService keys the cached export of services without a ring, which do not
// depend on the name; caching per unknown name would let clients grow the cache.
const noService = "\x00"

// Export returns service's answer function ("" = the default service). It is
// built once per change of the service's ring or of the overrides and shared
// afterwards: do not modify it.
func (r *Router) Export(service string) (*Export, error) {
	if service == "" {
		service = r.defaultService
	}
	rg := r.Ring(service)
	var gen uint64
	var live iter.Seq2[string, string]
	if r.overrides != nil {
		ol, ok := r.overrides.(OverrideLister)
		if !ok {
			return nil, errNotListable
		}
		gen, live = ol.Live()
	}
	key := service
	if rg == nil {
		key = noService
	}

	r.exportMu.Lock()
	defer r.exportMu.Unlock()
	if c, ok := r.exports[key]; ok && c.ring == rg && c.gen == gen {
		return c.e, nil
	}
	e := &Export{Hash: ring.HashName, Instances: rg.Instances(), Partitions: rg.Partitions(), Width: rg.Width(), Table: rg.IndexTable()}
	if rg != nil {
		e.Hash = rg.Hash()
	}
	if live != nil {
		for h, b := range live {
			e.OverrideHosts = append(e.OverrideHosts, h)
			e.OverrideBackends = append(e.OverrideBackends, b)
		}
	}
	e.Epoch = e.digest()
	if r.exports == nil {
		r.exports = map[string]exported{}
	}
	rings := r.Rings()
	for k := range r.exports {
		if _, ok := rings[k]; !ok && k != noService {
			delete(r.exports, k) // a service that went away
		}
	}
	r.exports[key] = exported{ring: rg, gen: gen, e: e}
	return e, nil
}

// digest hashes the content of e (everything but Epoch).
func (e *Export) digest() uint64 {
	d := xxhash.New()
	str := func(s string) {
		d.WriteString(strconv.Itoa(len(s)))
		d.WriteString(":")
		d.WriteString(s)
	}
	str(e.Hash)
	str(strconv.Itoa(e.Partitions))
	str(strconv.Itoa(e.Width))
	for _, inst := range e.Instances {
		str(inst)
	}
	str("table")
	table := make([]byte, 0, 4*len(e.Table))
	for _, v := range e.Table {
		table = binary.LittleEndian.AppendUint32(table, v)
	}
	d.Write(table)
	str("overrides")
	for i, h := range e.OverrideHosts {
		str(h)
		str(e.OverrideBackends[i])
	}
	return d.Sum64()
}
