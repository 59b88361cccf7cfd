// Package router answers ringman's one question: for this key and service,
// which backend? Every protocol (RESP, HTTP, CLI through HTTP) asks through
// Router, so the answer is the same everywhere (README: How it decides).
//
// Rings are rebuilt elsewhere (Update, called by the membership loop) and
// published with one atomic swap; lookups only load a pointer.
package router

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ringman/ring"
)

// Source says where an answer came from.
type Source uint8

const (
	Miss     Source = iota // no override and an empty ring
	Ring                   // the owner on the service's ring
	Override               // an explicit host override
)

// NumSources is the number of Sources, for arrays of counts indexed by one.
const NumSources = int(Override) + 1

func (s Source) String() string {
	switch s {
	case Ring:
		return "ring"
	case Override:
		return "override"
	}
	return "miss"
}

// Overrides answers explicit host -> backend entries (package hostmap).
type Overrides interface {
	// Match returns the override for a lookup key as a one-element slice,
	// or nil. It must not lock or allocate.
	Match(key []byte) []string
}

// Router holds the published rings of every service.
type Router struct {
	settings       ring.Settings
	defaultService string
	overrides      Overrides // nil: none

	rings atomic.Pointer[map[string]*ring.Ring] // read-only once published
	// known is every service this router has heard of (see Known); a new
	// map is published when one is added, never a change to a published one.
	known atomic.Pointer[map[string]struct{}]

	mu       sync.Mutex // serialises Update and Know
	builders map[string]*ring.Builder
	sets     map[string][]ring.Instance // last set per service, sorted by key

	exportMu sync.Mutex
	exports  map[string]exported // by service; see Export
}

// New returns a Router with no instances. defaultService is the service a
// lookup gets when it names none (RESP db 0).
func New(settings ring.Settings, defaultService string) (*Router, error) {
	if err := settings.Validate(); err != nil {
		return nil, err
	}
	if defaultService == "" {
		return nil, errors.New("router: default service name is empty")
	}
	r := &Router{
		settings:       settings,
		defaultService: defaultService,
		builders:       map[string]*ring.Builder{},
		sets:           map[string][]ring.Instance{},
	}
	empty := map[string]*ring.Ring{}
	r.rings.Store(&empty)
	known := map[string]struct{}{defaultService: {}}
	r.known.Store(&known)
	return r, nil
}

// Know adds services to the known ones (see Known) though none of their
// instances may be live yet: the services a RESP db is mapped to, say.
func (r *Router) Know(services ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.knowLocked(services)
}

// knowLocked publishes a new known set if services adds to it. Caller
// holds mu.
func (r *Router) knowLocked(services []string) {
	old := *r.known.Load()
	var next map[string]struct{}
	for _, s := range services {
		if _, ok := old[s]; ok || s == "" {
			continue
		}
		if next == nil {
			next = make(map[string]struct{}, len(old)+len(services))
			for k := range old {
				next[k] = struct{}{}
			}
		}
		next[s] = struct{}{}
	}
	if next != nil {
		r.known.Store(&next)
	}
}

// Known reports whether service ("" = the default service) is one this
// router has heard of: the default service, the services given to Know,
// and every service that had a live instance in some Update since New.
// A known service stays known when its last instance goes: a lookup on it
// has no live instance, while one on an unknown service names something
// that does not exist (a typo, most likely), and the protocols say which.
// It never locks or allocates.
func (r *Router) Known(service string) bool {
	if service == "" {
		return true
	}
	_, ok := (*r.known.Load())[service]
	return ok
}

// SetOverrides makes lookups consult o before the rings. Call it before
// serving lookups.
func (r *Router) SetOverrides(o Overrides) { r.overrides = o }

// DefaultService is the service used when a lookup names none.
func (r *Router) DefaultService() string { return r.defaultService }

// Settings returns the ring settings every ring is built with.
func (r *Router) Settings() ring.Settings { return r.settings }

// Change describes what Update did to one service's ring.
type Change struct {
	Service        string
	Added, Removed []string // instances' addresses, sorted
	// Reweighted are the addresses whose weight changed, sorted.
	Reweighted []string
	// Conflicts are the instances left out because another one has their
	// ID or address (two nodes advertising one instance differently): the
	// first in order of ID, address and weight is kept, on every node.
	Conflicts []string
	// Moved is the fraction of the service's keys whose owner changed
	// (ring.Moved): 1 for a service that appeared or went away.
	Moved float64
	Took  time.Duration // the rebuild
	// Idle counts the instances that own no partition (ring.Ring.Idle):
	// more instances than the partition count gives keys to.
	Idle int
}

// Update makes the rings match instances (service -> live instances' addresses)
// and publishes them in one swap: UpdateInstances with each instance its own
// ID, of weight 1.
func (r *Router) Update(instances map[string][]string) (changes []Change, err error) {
	sets := make(map[string][]ring.Instance, len(instances))
	for service, list := range instances {
		set := make([]ring.Instance, len(list))
		for i, addr := range list {
			set[i] = ring.Instance{Addr: addr}
		}
		sets[service] = set
	}
	return r.UpdateInstances(sets)
}

// UpdateInstances makes the rings match instances (service -> live
// instances) and publishes them in one swap. Services absent from instances
// get empty rings. Only changed services are rebuilt. It reports what
// changed, by service. On error for one service, that service keeps its
// previous ring and the others are still published.
func (r *Router) UpdateInstances(instances map[string][]ring.Instance) (changes []Change, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()

	// Known before the rings are published, so that a lookup never finds a
	// ring for a service that is still unknown.
	r.knowLocked(slices.Collect(maps.Keys(instances)))
	old := *r.rings.Load()
	next := make(map[string]*ring.Ring, len(instances))
	var errs []error
	for service, list := range instances {
		set, conflicts := Resolve(list)
		prev, existed := old[service]
		if existed && slices.Equal(r.sets[service], set) {
			next[service] = prev
			continue
		}
		b := r.builders[service]
		if b == nil {
			if b, err = ring.NewBuilder(r.settings); err != nil {
				return nil, err
			}
			r.builders[service] = b
		}
		start := time.Now()
		rg, err := b.BuildInstances(set)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", service, err))
			if existed {
				next[service] = prev
			}
			continue
		}
		took := time.Since(start)
		next[service] = rg
		was, now := addrs(r.sets[service]), addrs(set)
		changes = append(changes, Change{Service: service, Added: minus(now, was), Removed: minus(was, now),
			Reweighted: reweighted(r.sets[service], set), Conflicts: conflicts,
			Moved: ring.Moved(prev, rg), Took: took, Idle: rg.Idle()})
		r.sets[service] = set
	}
	for service, prev := range old {
		if _, ok := instances[service]; !ok {
			changes = append(changes, Change{Service: service, Removed: addrs(r.sets[service]), Moved: ring.Moved(prev, nil)})
			delete(r.builders, service)
			delete(r.sets, service)
		}
	}
	slices.SortFunc(changes, func(a, b Change) int { return strings.Compare(a.Service, b.Service) })
	r.rings.Store(&next)
	return changes, errors.Join(errs...)
}

// Resolve returns the instances UpdateInstances places for list: sorted by
// key (ID, else address), address and weight, exact duplicates dropped, and
// the first instance of each ID and of each address kept, the others
// returned as conflicts ("addr (id ID, weight W)"). A weight of 0 reads as
// 1 (ring.Instance): callers leave weight-0 instances out before.
func Resolve(list []ring.Instance) (set []ring.Instance, conflicts []string) {
	key := func(in ring.Instance) string {
		if in.ID != "" {
			return in.ID
		}
		return in.Addr
	}
	weight := func(in ring.Instance) float64 { return cmp.Or(in.Weight, 1) }
	sorted := slices.Clone(list)
	slices.SortFunc(sorted, func(x, y ring.Instance) int {
		return cmp.Or(strings.Compare(key(x), key(y)), strings.Compare(x.Addr, y.Addr), cmp.Compare(weight(x), weight(y)))
	})
	ids, taken := map[string]bool{}, map[string]bool{}
	for _, in := range sorted {
		in.Weight = weight(in)
		if in.ID == in.Addr {
			in.ID = ""
		}
		if n := len(set); n > 0 && set[n-1] == in {
			continue
		}
		if ids[key(in)] || taken[in.Addr] {
			conflicts = append(conflicts, fmt.Sprintf("%s (id %s, weight %g)", in.Addr, key(in), in.Weight))
			continue
		}
		ids[key(in)], taken[in.Addr] = true, true
		set = append(set, in)
	}
	return set, conflicts
}

// addrs returns the addresses of set, sorted.
func addrs(set []ring.Instance) []string {
	out := make([]string, len(set))
	for i, in := range set {
		out[i] = in.Addr
	}
	slices.Sort(out)
	return out
}

// reweighted returns the addresses in both sets whose weight differs, sorted.
func reweighted(was, now []ring.Instance) []string {
	before := make(map[string]float64, len(was))
	for _, in := range was {
		before[in.Addr] = in.Weight
	}
	var out []string
	for _, in := range now {
		if w, ok := before[in.Addr]; ok && w != in.Weight {
			out = append(out, in.Addr)
		}
	}
	slices.Sort(out)
	return out
}

// minus returns the elements of sorted a that are not in sorted b.
func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if _, found := slices.BinarySearch(b, x); !found {
			out = append(out, x)
		}
	}
	return out
}

// Ring returns the published ring of service ("" = the default service):
// nil for a service never seen, an empty Ring for one with no live instance.
// Both answer nothing.
func (r *Router) Ring(service string) *ring.Ring {
	if service == "" {
		service = r.defaultService
	}
	return (*r.rings.Load())[service]
}

// Rings returns every published ring by service. Do not modify it.
func (r *Router) Rings() map[string]*ring.Ring { return *r.rings.Load() }

// Lookup returns the backend for key on service ("" = the default service):
// the override of the key's host if there is one (README: How it decides), else the key's
// owner on the ring. It never locks or allocates.
func (r *Router) Lookup(service string, key []byte) (string, Source) {
	if r.overrides != nil {
		if o := r.overrides.Match(key); o != nil {
			return o[0], Override
		}
	}
	if backend, ok := r.Ring(service).OwnerBytes(key); ok {
		return backend, Ring
	}
	return "", Miss
}

// Candidates returns up to n backends for key in preference order, owner
// first. An override is the only candidate: a pinned host must not fail over
// to the ring. The slice is shared and must not be modified.
func (r *Router) Candidates(service string, key []byte, n int) ([]string, Source) {
	if r.overrides != nil && n > 0 {
		if o := r.overrides.Match(key); o != nil {
			return o, Override
		}
	}
	if c := r.Ring(service).CandidatesBytes(key, n); len(c) > 0 {
		return c, Ring
	}
	return nil, Miss
}
