package daemon

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"

	"ringman/discovery"
	"ringman/ring"
	"ringman/router"
)

// readiness is /readyz: a node is ready once it has joined its cluster
// (a seed or known peer answered, another node joined it, or it has none to
// join) and its published rings show the cluster as gossip sees it, so
// that a client told "ready" gets the cluster's answers, not those of a
// node alone. Once ready it stays ready (members come and go: that is
// routing, not readiness) until shutdown begins.
type readiness struct {
	published  *atomic.Bool // the first rings are built
	node       *discovery.Node
	rt         *router.Router
	seeds      []string
	knownPeers int
	ready      atomic.Bool
	stopping   atomic.Bool
}

func (r *readiness) check() (bool, string) {
	switch {
	case r.stopping.Load():
		return false, "shutting down: draining and leaving the cluster"
	case r.ready.Load():
		return true, ""
	case !r.published.Load():
		return false, "rings not published yet"
	case !r.node.Joined():
		return false, r.notJoined()
	}
	if ok, why := ringsMatch(r.rt.Rings(), r.node.Live()); !ok {
		return false, why
	}
	r.ready.Store(true)
	return true, ""
}

func (r *readiness) notJoined() string {
	var b strings.Builder
	b.WriteString("not joined yet: no answer from ")
	switch {
	case len(r.seeds) > 0 && r.knownPeers > 0:
		fmt.Fprintf(&b, "the seeds (--join %s) or the %d known peers", strings.Join(r.seeds, ", "), r.knownPeers)
	case len(r.seeds) > 0:
		fmt.Fprintf(&b, "the seeds (--join %s)", strings.Join(r.seeds, ", "))
	default:
		fmt.Fprintf(&b, "the %d known peers saved in the data file", r.knownPeers)
	}
	b.WriteString("; retrying in the background")
	return b.String()
}

// ringsMatch reports whether the published rings hold exactly the live
// instances, and if not, which service differs.
func ringsMatch(rings map[string]*ring.Ring, live map[string][]string) (bool, string) {
	want := ringInstances(live)
	for _, service := range slices.Sorted(maps.Keys(live)) {
		set, _ := router.Resolve(want[service])
		addrs := make([]string, len(set))
		for i, in := range set {
			addrs[i] = in.Addr
		}
		slices.Sort(addrs)
		if !slices.Equal(rings[service].Instances(), addrs) {
			return false, fmt.Sprintf("the ring of service %s is not rebuilt yet with its %d live instances", service, len(live[service]))
		}
	}
	for service, rg := range rings {
		if _, ok := live[service]; !ok && rg.Len() > 0 {
			return false, fmt.Sprintf("the ring of service %s still has instances that are gone", service)
		}
	}
	return true, ""
}
