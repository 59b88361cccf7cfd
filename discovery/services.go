package discovery

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Services that do not fit in the node metadata (meta.go) are fetched from
// the node that advertises them. Its metadata carries their digest; each
// other node that holds no services with that digest (memberTable.held)
// asks the node for them over TCP, and again with backoff until it has
// them: the node answers a request only for the services it advertises now,
// and only to members it knows (a node that just joined may not know the
// asker yet). The answer is used only if it hashes to the digest that the
// node's metadata names now; anything else is refused with one log line and
// changes nothing. Meanwhile the node keeps the services this node verified
// last (none at first), so a change is seen whole or not at all.
//
// Membership is untouched: joins, failures, drains and leaves travel in
// the metadata as before, and a fetch only fills in services. A change of
// services costs each other node one request and one answer of the
// services' size (4 kB for 100 services of two instances); a drain, a
// leave or a restart with the same services costs none, as the digest is
// held already. Push/pull does not carry services: the fetch is the one
// way they travel, retried until it succeeds.
const (
	msgServicesRequest  byte = 4 // then str from, digest
	msgServicesResponse byte = 5 // then str from, digest, the services' encoding

	// servicesRetryMin and servicesRetryMax bound the wait before asking a
	// node again for services it has not sent.
	servicesRetryMin = 200 * time.Millisecond
	servicesRetryMax = 10 * time.Second
	// maxServicesSends bounds the requests and answers in flight at once
	// (a send to a dead host takes memberlist's TCPTimeout); past it they
	// wait for the next round, and askers retry.
	maxServicesSends = 16
	// maxServicesAnswersWaiting bounds the requests waiting to be answered;
	// past it a request is dropped, and its sender asks again.
	maxServicesAnswersWaiting = 64
)

// servicesFetch is what servicesLoop needs: wake (capacity 1) tells it that
// some member advertises services by digest; answers holds the requests to
// answer, by the name of the member that asked.
type servicesFetch struct {
	wake        chan struct{}
	answers     chan servicesAnswer
	sends       chan struct{} // semaphore: maxServicesSends
	refusedLogs atomic.Int64  // when a refusal was last logged
}

type servicesAnswer struct {
	to  string
	msg []byte
}

func newServicesFetch() servicesFetch {
	return servicesFetch{
		wake:    make(chan struct{}, 1),
		answers: make(chan servicesAnswer, maxServicesAnswersWaiting),
		sends:   make(chan struct{}, maxServicesSends),
	}
}

func appendDigest(b []byte, d servicesDigest) []byte {
	b = binary.AppendUvarint(b, uint64(d.size))
	return append(b, d.hash[:]...)
}

// readDigest reads what appendDigest wrote.
func (r *metaReader) digest() (servicesDigest, error) {
	size, err := r.uvarint()
	if err != nil {
		return servicesDigest{}, err
	}
	if size == 0 || size > maxServicesBytes {
		return servicesDigest{}, fmt.Errorf("%w: services digest of %d bytes, over %d", errMetaTooLarge, size, maxServicesBytes)
	}
	if len(r.b) < digestHashLen {
		return servicesDigest{}, errMetaTruncated
	}
	d := servicesDigest{size: int(size), hash: [digestHashLen]byte(r.b[:digestHashLen])}
	r.b = r.b[digestHashLen:]
	return d, nil
}

// servicesFor returns this node's own services if d is their digest, else
// nil. Called by the event delegates, with memberlist's lock held.
func (n *Node) servicesFor(d servicesDigest) map[string][]string {
	n.metaMu.Lock()
	defer n.metaMu.Unlock()
	if n.local.Digest != d {
		return nil
	}
	return n.local.Services
}

// receiveServicesRequest queues an answer to a member asking for this
// node's services, if it asks for the ones advertised now.
func (n *Node) receiveServicesRequest(buf []byte) {
	r := &metaReader{b: buf}
	from, err := r.str()
	var d servicesDigest
	if err == nil {
		d, err = r.digest()
	}
	if err != nil {
		n.log.Debug("ignored unreadable services request", "bytes", len(buf), "err", err)
		return
	}
	n.metaMu.Lock()
	services := n.localServices
	current := n.local.Digest == d
	n.metaMu.Unlock()
	if !current || services == nil {
		n.log.Debug("ignored request for services this node no longer advertises", "from", from, "digest", d)
		return
	}
	msg := []byte{msgServicesResponse}
	msg = appendString(msg, n.cfg.Name)
	msg = appendDigest(msg, d)
	msg = append(msg, services...)
	select {
	case n.svc.answers <- servicesAnswer{to: from, msg: msg}:
	default:
		n.log.Debug("services request dropped: too many waiting; its sender asks again", "from", from)
	}
}

// receiveServicesResponse takes a member's services, if they are the ones
// its metadata names now.
func (n *Node) receiveServicesResponse(buf []byte) {
	r := &metaReader{b: buf}
	from, err := r.str()
	var d servicesDigest
	if err == nil {
		d, err = r.digest()
	}
	if err != nil {
		n.refuseServices(from, fmt.Errorf("unreadable services answer: %w", err), len(buf))
		return
	}
	if !n.table.wants(from, d) {
		n.log.Debug("ignored services answer: not wanted (late, or already held)", "node", from, "digest", d)
		return
	}
	services, err := decodeServices(r.b, d)
	if err != nil {
		n.refuseServices(from, err, len(r.b))
		return
	}
	if n.table.fillServices(from, d, services) {
		n.markDirty()
	}
}

// refuseServices logs a refused services answer: at most one line a
// minute, as anyone who can send to this node can send these.
func (n *Node) refuseServices(from string, err error, size int) {
	if logDue(&n.svc.refusedLogs, time.Minute) {
		n.log.Warn("refused services answer; keeping the services verified before", "node", fmt.Sprintf("%.64q", from), "bytes", size, "err", err)
	}
}

// wakeServices tells servicesLoop that a member advertises services by
// digest. It never blocks.
func (n *Node) wakeServices() {
	select {
	case n.svc.wake <- struct{}{}:
	default:
	}
}

// servicesTry is servicesLoop's record of the requests to one member.
type servicesTry struct {
	digest servicesDigest
	next   time.Time // when to ask again
	wait   time.Duration
	warned bool // that the services are still missing, once per digest
}

// servicesLoop asks members for the services they advertise by digest and
// this node does not hold, backing off per member, and answers the members
// that ask this node.
func (n *Node) servicesLoop() {
	defer n.wg.Done()
	tries := make(map[string]servicesTry)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-n.done:
			return
		case a := <-n.svc.answers:
			n.answerServices(a)
			continue
		case <-n.svc.wake:
		case <-timer.C:
		}
		now := time.Now()
		wanted := n.table.wantedServices()
		next := now.Add(time.Hour)
		seen := make(map[string]bool, len(wanted))
		for _, w := range wanted {
			name := w.node.Name
			seen[name] = true
			try, ok := tries[name]
			if !ok || try.digest != w.digest {
				try = servicesTry{digest: w.digest, next: now, wait: servicesRetryMin}
			}
			if !now.Before(try.next) && n.sendServices(w.node, servicesRequest(n.cfg.Name, w.digest)) {
				try.next = now.Add(try.wait)
				try.wait = min(2*try.wait, servicesRetryMax)
				if try.wait == servicesRetryMax && !try.warned {
					// Six requests over 6 s unanswered: none is coming soon.
					try.warned = true
					n.log.Warn("services of a node not fetched yet: keeping the ones it had, if any; is its gossip port reachable over TCP?",
						"node", name, "addr", nodeAddr(w.node), "digest", w.digest)
				}
			}
			tries[name] = try
			if try.next.Before(next) {
				next = try.next
			}
		}
		for name := range tries {
			if !seen[name] {
				delete(tries, name)
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(max(next.Sub(now), 10*time.Millisecond))
	}
}

func servicesRequest(from string, d servicesDigest) []byte {
	return appendDigest(appendString([]byte{msgServicesRequest}, from), d)
}

// answerServices sends a queued answer to the member that asked, if this
// node knows it.
func (n *Node) answerServices(a servicesAnswer) {
	for _, p := range n.table.others() {
		if p.node.Name == a.to {
			if !n.sendServices(p.node, a.msg) {
				n.log.Debug("services answer not sent: too many sends in flight; its member asks again", "to", a.to)
			}
			return
		}
	}
	n.log.Debug("services request from a node not known yet; it asks again", "from", a.to)
}

// sendServices sends msg to node over TCP in the background, unless
// maxServicesSends are in flight; it reports whether it started.
func (n *Node) sendServices(to *memberlist.Node, msg []byte) bool {
	select {
	case n.svc.sends <- struct{}{}:
	default:
		return false
	}
	go func() {
		defer func() { <-n.svc.sends }()
		if n.isClosed() {
			return
		}
		if err := n.ml.SendReliable(to, msg); err != nil {
			n.log.Debug("services message not sent", "to", to.Name, "err", err)
		}
	}()
	return true
}
