package discovery

import (
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// maxPendingChanges bounds the membership changes waiting to be logged.
const maxPendingChanges = 4096

// memberTable is this node's view of the cluster: every member with its
// status and metadata, the changes the event loop has not logged yet, the
// refused nodes already logged, and the members to exchange full state with
// after they came back from failed.
//
// Concurrency: every method takes mu and may be called from any goroutine;
// memberlist's delegates call record and firstRefusal with memberlist's own
// lock held, so nothing under mu blocks, does I/O or calls out. mu is a leaf:
// no other lock is taken while it is held.
type memberTable struct {
	self string // this node's name
	// resyncAfter, when set (only with a SharedState), is how long after a
	// full state exchange with a recovered member the next member that
	// recovers is recorded in resync; zero records none.
	resyncAfter time.Duration
	forgetAfter time.Duration

	mu      sync.Mutex
	members map[string]*member
	pending []change           // membership changes not yet logged
	dropped int                // changes not logged because pending was full
	refused map[string]refusal // refused nodes already logged
	// resync holds the members seen failed and then alive again since
	// this node last exchanged full state with a recovered member (see
	// reconnectLoop); exchangedAt is when that was.
	resync      map[string]recovered
	exchangedAt time.Time
}

// member is one node as this node sees it.
type member struct {
	name   string
	addr   string
	status Status
	// meta is the member's metadata, with the services it is known to
	// serve: held is the digest of those services when they came from
	// outside the metadata. While held differs from meta.Digest the member
	// has changed its services and this node has not fetched the new ones
	// yet (services.go): it keeps the last ones verified, or none.
	meta  meta
	held  servicesDigest
	since time.Time // last status change
}

// recovered is a member seen failed, then alive again.
type recovered struct {
	addr string
	down time.Duration // how long it was failed
}

// change is a membership change waiting to be logged by the event loop.
type change struct {
	name, addr string
	from, to   Status
	services   map[string][]string
}

type refusal struct {
	fingerprint string
	at          time.Time
}

// peer is another member, with an address of its own (the Nodes memberlist
// hands out are its live structures).
type peer struct {
	node   *memberlist.Node
	status Status
}

func newMemberTable(self string, forgetAfter, resyncAfter time.Duration) *memberTable {
	return &memberTable{
		self:        self,
		forgetAfter: forgetAfter,
		resyncAfter: resyncAfter,
		members:     make(map[string]*member),
		refused:     make(map[string]refusal),
		resync:      make(map[string]recovered),
	}
}

// record notes a join, update or leave (gone) of the node called name at
// addr. m is its metadata, or nil when it cannot be read: then a known
// member keeps what it had, and an unknown one (never admitted) is ignored.
// When m has a services digest and no services, the services are those
// of any member that holds that digest, else the member's previous ones
// until fillServices brings them. It reports whether anything changed.
func (t *memberTable) record(name, addr string, m *meta, gone bool, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	prev := t.members[name]
	var held servicesDigest
	switch {
	case m == nil && prev == nil:
		return false
	case m == nil:
		m, held = &prev.meta, prev.held
	case m.Digest == servicesDigest{}:
	case m.Services != nil:
		held = m.Digest
	default:
		if services, ok := t.heldLocked(m.Digest); ok {
			m.Services, held = services, m.Digest
		} else if prev != nil {
			m.Services, held = prev.meta.Services, prev.held
		}
	}
	var status Status
	switch {
	case gone && (m.Leaving || (prev != nil && prev.meta.Leaving)):
		// memberlist reports a leave and a failure alike (the state that
		// tells them apart is not visible to us): the leaving flag the
		// node gossiped before leaving does.
		status = StatusLeft
	case gone:
		status = StatusFailed
	case m.Leaving:
		status = StatusLeaving
	case m.Draining:
		status = StatusDraining
	default:
		status = StatusAlive
	}
	cur := &member{name: name, addr: addr, status: status, meta: *m, held: held, since: now}
	var from Status
	if prev != nil {
		from = prev.status
		if prev.status == status && prev.addr == addr && prev.held == held && equalMeta(prev.meta, *m) {
			return false
		}
		if prev.status == status {
			cur.since = prev.since
		}
	}
	t.members[name] = cur
	if prev != nil && prev.status == StatusFailed && !gone && name != t.self && t.resyncAfter > 0 &&
		now.Sub(t.exchangedAt) > t.resyncAfter {
		// Back from a crash or a partition: what changed on its side
		// reached us neither by gossip nor by our reconnects, which stop
		// once it is alive again. reconnectLoop exchanges full state with
		// one such member. Not when we just did (our rejoin is what
		// brought it back, or another member of its side).
		t.resync[name] = recovered{addr: addr, down: now.Sub(prev.since)}
	} else if gone {
		delete(t.resync, name)
	}
	if len(t.pending) < maxPendingChanges {
		t.pending = append(t.pending, change{name: name, addr: addr, from: from, to: status, services: m.Services})
	} else {
		t.dropped++
	}
	return true
}

// heldLocked returns the services of a member that holds digest d.
// Caller holds mu.
func (t *memberTable) heldLocked(d servicesDigest) (map[string][]string, bool) {
	for _, m := range t.members {
		if m.held == d {
			return m.meta.Services, true
		}
	}
	return nil, false
}

// servicesWanted is a member whose services this node is to fetch.
type servicesWanted struct {
	node   *memberlist.Node
	digest servicesDigest
}

// wantedServices returns the other members whose metadata names services
// this node does not hold, among those that can answer (not left or failed).
func (t *memberTable) wantedServices() []servicesWanted {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []servicesWanted
	for _, m := range t.members {
		if m.name == t.self || m.held == m.meta.Digest || m.status == StatusLeft || m.status == StatusFailed {
			continue
		}
		if node := memberNode(m); node != nil {
			out = append(out, servicesWanted{node: node, digest: m.meta.Digest})
		}
	}
	return out
}

// wants reports whether the member called name has services with digest d
// that this node does not hold yet.
func (t *memberTable) wants(name string, d servicesDigest) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.members[name]
	return m != nil && m.meta.Digest == d && m.held != d
}

// fillServices gives the member called name the services it advertises by
// digest d, fetched and verified. It reports whether anything changed:
// nothing does when the member's metadata names other services by now.
func (t *memberTable) fillServices(name string, d servicesDigest, services map[string][]string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.members[name]
	if m == nil || m.meta.Digest != d || m.held == d {
		return false
	}
	cur := *m
	cur.meta.Services, cur.held = services, d
	t.members[name] = &cur
	if len(t.pending) < maxPendingChanges {
		t.pending = append(t.pending, change{name: name, addr: cur.addr, from: cur.status, to: cur.status, services: services})
	} else {
		t.dropped++
	}
	return true
}

// firstRefusal reports whether the refused node called name (with
// fingerprint theirs) is to be logged: the first time, when its
// fingerprint changes, and again every ten minutes.
func (t *memberTable) firstRefusal(name, theirs string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, seen := t.refused[name]
	if seen && r.fingerprint == theirs && now.Sub(r.at) <= 10*time.Minute {
		return false
	}
	if len(t.refused) >= 1024 {
		clear(t.refused)
	}
	t.refused[name] = refusal{fingerprint: theirs, at: now}
	return true
}

// update is what the event loop takes from the table at once: the changes
// to log and the state to publish.
type update struct {
	changes []change
	dropped int
	live    map[string][]string
	peers   []string
}

// takeUpdate returns the changes recorded since the last call, with the
// live set and the peers' addresses they led to.
func (t *memberTable) takeUpdate() update {
	t.mu.Lock()
	defer t.mu.Unlock()
	u := update{changes: t.pending, dropped: t.dropped, live: t.liveLocked(), peers: t.peerAddrsLocked()}
	t.pending, t.dropped = nil, 0
	return u
}

// list returns every member, recently left or failed ones included, sorted
// by name.
func (t *memberTable) list(now time.Time) []Member {
	t.mu.Lock()
	t.pruneLocked(now)
	out := make([]Member, 0, len(t.members))
	for _, m := range t.members {
		out = append(out, Member{
			Name:         m.name,
			Addr:         m.addr,
			Status:       m.status,
			Services:     cloneServices(m.meta.Services),
			Version:      m.meta.Version,
			Fingerprint:  m.meta.Fingerprint,
			CheckFailing: m.meta.CheckFailing,
		})
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// live returns the live instances per service.
func (t *memberTable) live() map[string][]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.liveLocked()
}

// liveLocked computes the live instances per service. Caller holds mu.
func (t *memberTable) liveLocked() map[string][]string {
	live := make(map[string][]string)
	for _, m := range t.members {
		if m.status != StatusAlive {
			continue
		}
		for svc, insts := range m.meta.Services {
			live[svc] = append(live[svc], insts...)
		}
	}
	for svc, insts := range live {
		live[svc] = sortDedup(insts)
	}
	return live
}

// peerAddrs returns the gossip addresses of the other members in the
// cluster, sorted.
func (t *memberTable) peerAddrs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.peerAddrsLocked()
}

// peerAddrsLocked is peerAddrs. Caller holds mu.
func (t *memberTable) peerAddrsLocked() []string {
	var addrs []string
	for _, m := range t.members {
		if m.name != t.self && inCluster(m.status) {
			addrs = append(addrs, m.addr)
		}
	}
	return sortDedup(addrs)
}

// prune forgets members that left or failed forgetAfter ago.
func (t *memberTable) prune(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pruneLocked(now)
}

// pruneLocked is prune. Caller holds mu.
func (t *memberTable) pruneLocked(now time.Time) {
	for name, m := range t.members {
		if (m.status == StatusLeft || m.status == StatusFailed) && now.Sub(m.since) >= t.forgetAfter {
			delete(t.members, name)
		}
	}
}

// others returns every other member, each with an address of its own.
// Members whose address cannot be parsed (none that memberlist reported)
// are left out.
func (t *memberTable) others() []peer {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []peer
	for _, m := range t.members {
		if m.name == t.self {
			continue
		}
		if node := memberNode(m); node != nil {
			out = append(out, peer{node: node, status: m.status})
		}
	}
	return out
}

// nobodyToTell reports whether no other member is alive or draining: the
// others, if any, are leaving, left or failed.
func (t *memberTable) nobodyToTell() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range t.members {
		if m.name != t.self && inCluster(m.status) {
			return false
		}
	}
	return true
}

// selfMetaIs reports whether memberlist has reported this node's metadata
// as m (UpdateNode does so before it waits).
func (t *memberTable) selfMetaIs(m meta) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	self := t.members[t.self]
	return self != nil && equalMeta(self.meta, m)
}

// selfLeft reports whether memberlist has reported this node gone
// (memberlist.Leave does so before it waits).
func (t *memberTable) selfLeft() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	self := t.members[t.self]
	return self != nil && (self.status == StatusLeft || self.status == StatusFailed)
}

// aliveAt reports whether some member is alive (or draining) at gossip
// address addr.
func (t *memberTable) aliveAt(addr string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range t.members {
		if m.addr == addr && inCluster(m.status) {
			return true
		}
	}
	return false
}

// reconnectTargets returns the addresses of the failed members still
// remembered, and the recovered member to exchange full state with (the
// one that was down longest; its addr is empty when there is none): right
// after a heal, members of our own side flap (the other side's stale
// "dead" gossip, refuted at once), and they missed nothing.
func (t *memberTable) reconnectTargets() (failed []string, resync recovered) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range t.members {
		if m.status == StatusFailed && m.name != t.self {
			failed = append(failed, m.addr)
		}
	}
	for _, r := range t.resync {
		if r.down > resync.down {
			resync = r
		}
	}
	return failed, resync
}

// exchanged records a full state exchange with a member that had failed.
func (t *memberTable) exchanged(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.resync)
	t.exchangedAt = now
}

// inCluster reports whether a member with status s takes part in gossip:
// alive or draining (leaving, left and failed ones do not, or not for long).
func inCluster(s Status) bool { return s == StatusAlive || s == StatusDraining }

func equalMeta(a, b meta) bool {
	return a.Draining == b.Draining && a.Leaving == b.Leaving && a.CheckFailing == b.CheckFailing &&
		a.Fingerprint == b.Fingerprint && a.Version == b.Version && a.Digest == b.Digest &&
		equalServices(a.Services, b.Services)
}

func equalServices(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, av := range a {
		bv, ok := b[k]
		if !ok || !slices.Equal(av, bv) {
			return false
		}
	}
	return true
}

// memberNode is a memberlist.Node of our own for sending to m, or nil when
// m's address cannot be parsed.
func memberNode(m *member) *memberlist.Node {
	host, port, err := net.SplitHostPort(m.addr)
	if err != nil {
		return nil
	}
	p, err := strconv.ParseUint(port, 10, 16)
	ip := net.ParseIP(host)
	if err != nil || ip == nil {
		return nil
	}
	return &memberlist.Node{Name: m.name, Addr: ip, Port: uint16(p)}
}
