package discovery

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// ErrShutdown is returned by the methods of a Node that has been shut down.
var ErrShutdown = errors.New("discovery: node is shut down")

// ErrJoinSelf is returned by Join when every address given is this node's
// own gossip address: joining itself would reach nobody.
var ErrJoinSelf = errors.New("the address is this node's own gossip address")

var errLeft = errors.New("discovery: node has left the cluster")

// Node is a running cluster member. Its methods are safe for concurrent use.
//
// Node keeps this node's own metadata and drain reasons (under metaMu), the
// operations that change its memberlist state (under opMu), and the
// goroutines, which Shutdown stops and waits for: the event loop (run),
// joinLoop, reconnectLoop, reclaimLoop, keyLoop, checkLoop, servicesLoop
// and the broadcaster's run. The rest is in types of its own, each with its own
// lock: the member table, the broadcaster and the keyring's query.
type Node struct {
	cfg  Config // normalized
	log  *slog.Logger
	tun  tunables
	ml   *memberlist.Memberlist
	addr string         // advertised gossip host:port
	self gossipListener // set by Start, read-only after
	enc  bool

	table   *memberTable // who is in the cluster, as this node sees it
	checker *healthCheck // nil without Config.Check; set before Start returns
	// rampRestart tells rampLoop an undrain began the slow start again.
	rampRestart chan struct{}

	// metaMu guards this node's own metadata and why it drains. NodeMeta
	// takes it with memberlist's lock held: it is never held while calling
	// memberlist.
	metaMu     sync.Mutex
	local      meta   // what this node advertises
	localBytes []byte // local, encoded; returned by NodeMeta
	// localServices is local.Services encoded, when they go outside the
	// metadata (local.Digest is set); nil when they are inline.
	localServices []byte
	manualDrain   bool
	checkDrain    bool

	// opMu orders the operations that change this node's memberlist state
	// (metadata updates, Leave, Shutdown), so that none runs after Shutdown.
	opMu   sync.Mutex
	closed bool // under opMu
	left   bool // under opMu

	joined atomic.Bool
	// refusedAlive counts the alive messages and merges refused by admit.
	refusedAlive atomic.Int64

	gossip *broadcaster  // Broadcast's queues (broadcast.go)
	svc    servicesFetch // services outside the metadata (services.go)
	// Shared state's full exchanges (shared.go).
	stateTooBigLogged atomic.Int64
	stateLargeLogged  atomic.Int64

	keys keyState // gossip keyring and its cluster-wide changes (keys.go)

	// reclaims carries the new addresses of members that restarted
	// elsewhere under the same name (NotifyConflict; see reclaimLoop).
	reclaims    chan string
	reclaimWait time.Duration // how long reclaimLoop keeps trying one address

	dirty chan struct{} // capacity 1: "the view changed", coalesced
	// joinedSome (capacity 1) tells settleLoop that members joined.
	joinedSome chan struct{}
	done       chan struct{} // closed by Shutdown
	ctx        context.Context
	cancel     context.CancelFunc // called by Shutdown
	closeOnce  sync.Once
	wg         sync.WaitGroup

	// Owned by the event loop (and by Start before the loop runs).
	lastLive   map[string][]string
	savedPeers peerSaves
	// maxNodes is the profile's MaxNodes; oversize is set once the
	// cluster has outgrown it and the node has said so.
	maxNodes int
	oversize bool
}

// Start creates the memberlist, starts the event loop, joins seeds and known
// peers in the background, and returns. OnChange has been called once with
// this node's own view when Start returns.
func Start(cfg Config) (*Node, error) {
	return start(cfg, defaultTunables())
}

func start(cfg Config, tun tunables) (*Node, error) {
	s, err := normalize(cfg)
	if err != nil {
		return nil, err
	}
	cfg, mlc, keyring := s.cfg, s.mlc, s.keyring
	bindIP, bindPort, advIP, advPort := s.bindIP, s.bindPort, s.advIP, s.advPort

	n := &Node{
		cfg:           cfg,
		log:           cfg.Logger,
		tun:           tun,
		enc:           keyring != nil,
		dirty:         make(chan struct{}, 1),
		rampRestart:   make(chan struct{}, 1),
		joinedSome:    make(chan struct{}, 1),
		reclaims:      make(chan string, reclaimQueue),
		done:          make(chan struct{}),
		local:         s.local,
		localBytes:    s.localBytes,
		localServices: s.localServices,
		svc:           newServicesFetch(),
	}
	if p, err := LookupProfile(cfg.Profile); err == nil {
		n.maxNodes = p.MaxNodes
	}
	if tun.maxNodes > 0 {
		n.maxNodes = tun.maxNodes
	}
	var resyncAfter time.Duration
	if cfg.SharedState != nil {
		// Not within two reconnect rounds of an exchange: see record.
		resyncAfter = 2 * tun.reconnectEvery
	}
	n.table = newMemberTable(cfg.Name, tun.forgetAfter, resyncAfter)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			n.cancel()
		}
	}()

	var checker *healthCheck
	if cfg.Check.URL != "" {
		// Check once before joining so that a node whose instance is down
		// starts drained instead of flapping into every ring.
		checker = newHealthCheck(cfg.Check)
		n.checker = checker
		if err := checker.probe(n.ctx); !checker.first(err, time.Now()) {
			n.log.Warn("health check failing at start; draining", "url", cfg.Check.URL, "err", err)
			n.checkDrain = true
			n.local.Draining = true
			n.local.CheckFailing = true
			n.localBytes = n.local.encode() // same size: flags only
		}
		defer func() {
			if !ok {
				checker.close()
			}
		}()
	}

	mlLogger := memberlistLogger(n.log)
	nt, boundPort, err := newTransport(bindIP, bindPort, mlLogger)
	if err != nil {
		return nil, fmt.Errorf("gossip bind %s: %w", cfg.BindAddr, err)
	}
	if advIP != "" && advPort == 0 {
		advPort = boundPort
	}
	var transport memberlist.NodeAwareTransport = nt
	if tun.wrapTransport != nil {
		self := net.JoinHostPort(bindIP, strconv.Itoa(boundPort))
		if advIP != "" {
			self = net.JoinHostPort(advIP, strconv.Itoa(advPort))
		}
		transport = tun.wrapTransport(self, nt)
	}

	n.initKeys(keyring)

	d := delegates{n}
	mlc.Name = cfg.Name
	mlc.Transport = transport
	mlc.BindAddr = bindIP
	mlc.BindPort = boundPort // default port for join addresses without one
	mlc.AdvertiseAddr = advIP
	mlc.AdvertisePort = advPort
	mlc.Label = cfg.Label
	mlc.Keyring = keyring
	mlc.Delegate = d
	mlc.Events = d
	mlc.Alive = d
	mlc.Merge = d
	mlc.Conflict = d
	mlc.Logger = mlLogger
	if tun.pushPullInterval > 0 {
		mlc.PushPullInterval = tun.pushPullInterval
	}
	// The queue exists before memberlist, which may ask it for broadcasts
	// at once; it calls NumNodes only when a message is queued, which
	// Broadcast does after Start has set n.ml.
	n.gossip = newBroadcaster(n.log, n.table, func() int { return n.ml.NumMembers() }, mlc.RetransmitMult,
		gossipLimit(mlc, keyring != nil), func(to *memberlist.Node, msg []byte) error { return n.ml.SendReliable(to, msg) })

	ml, err := memberlist.Create(mlc)
	if err != nil {
		_ = transport.Shutdown()
		// memberlist formats its errors with %v: their text is all
		// there is to tell them apart.
		if strings.Contains(err.Error(), "no private IP address found") {
			return nil, fmt.Errorf("start gossip: %w (set an advertise address, or bind to a specific address)", err)
		}
		return nil, fmt.Errorf("start gossip: %w", err)
	}
	n.ml = ml
	self := ml.LocalNode()
	n.addr = net.JoinHostPort(self.Addr.String(), strconv.Itoa(int(self.Port)))
	n.self = gossipListener{
		bindIP: net.ParseIP(bindIP), bindPort: boundPort,
		advIP: slices.Clone(self.Addr), advPort: int(self.Port),
	}

	var peers []string
	if cfg.Peers != nil {
		peers, err = cfg.Peers.LoadPeers()
		if err != nil {
			n.log.Warn("cannot load known peers; relying on seeds", "err", err)
		}
		n.savedPeers.last = sortDedup(slices.Clone(peers))
	}
	targets, selfSeeds := n.joinTargets(cfg.Seeds, peers)
	// Nothing to join is joined; seeds that all turned out to be this node
	// are not: the node waits for another to join it.
	if len(targets) == 0 && selfSeeds == 0 {
		n.joined.Store(true)
	}

	// The first OnChange happens here, before the loop exists, so that
	// OnChange is never called concurrently and the caller's rings are
	// built when Start returns.
	n.publish()

	// Past the reclaim time and a failure detection or two: by then the
	// old address is dead everywhere and the new one is taken.
	n.reclaimWait = mlc.DeadNodeReclaimTime + 10*mlc.ProbeInterval*time.Duration(mlc.SuspicionMult) + 5*time.Second

	n.wg.Add(7)
	go n.run()
	go n.servicesLoop()
	go n.reconnectLoop()
	go n.reclaimLoop()
	go n.settleLoop()
	go func() {
		defer n.wg.Done()
		n.gossip.run(n.done)
	}()
	go n.keyLoop()
	if len(targets) > 0 {
		n.wg.Add(1)
		go n.joinLoop(targets)
	}
	if checker != nil {
		n.wg.Add(1)
		go n.checkLoop(checker)
	}
	if cfg.SlowStart > 0 {
		n.wg.Add(1)
		go n.rampLoop(cfg.SlowStart / slowStartSteps)
	}
	ok = true
	return n, nil
}

// newTransport binds the gossip ports. Binding ourselves instead of leaving
// it to memberlist keeps an explicit advertise port when the bind port is 0
// (memberlist would overwrite it with the bound port).
func newTransport(ip string, port int, logger *log.Logger) (*memberlist.NetTransport, int, error) {
	attempts := 1
	if port == 0 {
		// Port 0 picks a TCP port, then binds UDP on the same number,
		// which another process may hold: try a few.
		attempts = 10
	}
	var err error
	for range attempts {
		var nt *memberlist.NetTransport
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{ip},
			BindPort:  port,
			Logger:    logger,
		})
		if err == nil {
			return nt, nt.GetAutoBindPort(), nil
		}
		// memberlist wraps the listener's error with %v, so errors.Is
		// cannot find syscall.EADDRINUSE in it: the text can.
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, 0, err
}

// Name is this node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Addr is the gossip address this node advertises (with the real port when
// BindAddr asked for port 0).
func (n *Node) Addr() string { return n.addr }

// Encrypted reports whether gossip is encrypted.
func (n *Node) Encrypted() bool { return n.enc }

// Members returns every known member, this node included, with recently
// left or failed ones (for an hour), sorted by name.
func (n *Node) Members() []Member { return n.table.list(time.Now()) }

// Live returns the live instances per service (of members that are alive,
// not draining and not leaving), each list sorted and deduplicated. Services
// with no live instance are absent.
func (n *Node) Live() map[string][]string { return n.table.live() }

// Joined reports whether the node has joined a cluster (a seed or known
// peer answered, or another node joined it), or has nothing to join.
func (n *Node) Joined() bool { return n.joined.Load() }

// Join contacts addrs now and returns how many answered. The error, when
// none answered, says why for each address. An address that is this node's
// own gossip address (a host without a port means this node's port) is
// skipped with a warning; when every address is, the error wraps
// ErrJoinSelf and the node does not count as joined.
func (n *Node) Join(addrs []string) (int, error) {
	if n.isClosed() {
		return 0, ErrShutdown
	}
	var targets []string
	for _, a := range addrs {
		if a = strings.TrimSpace(a); a != "" {
			targets = append(targets, a)
		}
	}
	if len(targets) == 0 {
		return 0, errors.New("no address given")
	}
	count, err := n.join(targets, joinEach)
	if count > 0 {
		n.joined.Store(true)
	}
	return count, err
}

// SetDraining takes this node's instances out of (or back into) every ring,
// without leaving the cluster. The node stays draining while its health
// check fails, whatever on says.
func (n *Node) SetDraining(on bool) error {
	return n.setDrain(func() { n.manualDrain = on })
}

// SetServices replaces the instances this node advertises (service ->
// "host:port"s) and gossips the change; see Config.Services for the
// limits, past which it changes nothing and says which was reached.
func (n *Node) SetServices(services map[string][]string) error {
	services, err := normalizeServices(services)
	if err != nil {
		return err
	}
	n.opMu.Lock()
	defer n.opMu.Unlock()
	if n.closed {
		return ErrShutdown
	}
	if n.left {
		return errLeft
	}
	return n.updateMetaLocked(n.tun.metaTimeout, func(m *meta) { m.Services = services })
}

// Draining reports whether this node is draining (by hand or by its check).
func (n *Node) Draining() bool {
	n.metaMu.Lock()
	defer n.metaMu.Unlock()
	return n.manualDrain || n.checkDrain
}

// setDrain changes a drain reason and, when that changes the draining flag,
// gossips the new metadata.
func (n *Node) setDrain(set func()) error {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	if n.closed {
		return ErrShutdown
	}
	n.metaMu.Lock()
	was := n.manualDrain || n.checkDrain
	set()
	draining, checkFailing := n.manualDrain || n.checkDrain, n.checkDrain
	n.metaMu.Unlock()
	if n.left {
		return errLeft
	}
	// An undrained node starts slow again, in the same update.
	ramp := was && !draining && n.cfg.SlowStart > 0
	err := n.updateMetaLocked(n.tun.metaTimeout, func(m *meta) {
		m.Draining = draining
		m.CheckFailing = checkFailing
		if ramp {
			m.Services = withRamp(m.Services, 1)
		}
	})
	if err == nil && ramp {
		n.restartRamp()
	}
	return err
}

// updateMetaLocked applies edit to this node's metadata and, if the bytes
// change, gossips them. Caller holds opMu.
func (n *Node) updateMetaLocked(timeout time.Duration, edit func(*meta)) error {
	n.metaMu.Lock()
	next := n.local
	edit(&next)
	next, b, services, err := advertise(next)
	if err != nil {
		n.metaMu.Unlock()
		return err
	}
	if string(b) == string(n.localBytes) {
		n.metaMu.Unlock()
		return nil
	}
	n.local, n.localBytes, n.localServices = next, b, services
	n.metaMu.Unlock()
	// UpdateNode reports the change to our own event delegate at once, then
	// waits until the broadcast has gone out. A timeout only means it is
	// still spreading; the change is in effect.
	err = n.untilTold(max(timeout, time.Millisecond), n.ml.UpdateNode, func() bool { return n.table.selfMetaIs(next) })
	if err != nil {
		n.log.Warn("node metadata update not confirmed yet; it keeps spreading by gossip", "err", err)
	}
	return nil
}

// Leave announces a graceful leave and waits up to timeout for it to spread.
// Others list the node as left, not failed. Call Shutdown afterwards. With
// nobody to tell (every other member is leaving, left or failed, as when the
// last node of a cluster or a whole cluster stops), it returns at once.
func (n *Node) Leave(timeout time.Duration) error {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	if n.closed {
		return ErrShutdown
	}
	if n.left {
		return nil
	}
	start := time.Now()
	// First the leaving flag, so that every node takes our instances out
	// of its rings and knows the coming dead message is a leave.
	_ = n.updateMetaLocked(min(timeout/2, n.tun.metaTimeout), func(m *meta) { m.Leaving = true })
	n.left = true
	remaining := max(timeout-time.Since(start), time.Millisecond)
	if err := n.untilTold(remaining, n.ml.Leave, n.table.selfLeft); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	return nil
}

// tellPoll is how often untilTold looks whether anyone is left to tell.
const tellPoll = 20 * time.Millisecond

// untilTold runs send, a memberlist call that gossips news about this node
// and waits up to timeout until memberlist has sent it often enough, and
// returns its error; or nil as soon as nobody is left to tell. memberlist
// gossips only to members it sees alive or suspect: when the others leave
// during the wait (a cluster stopped all at once) the news never goes out,
// and send would wait its whole timeout for nothing.
//
// send cannot be interrupted. Returning early leaves it waiting on its
// timer in the background, harmless even after Shutdown, but only once
// started reports that it has done its work: memberlist.Leave panics when it
// starts after Shutdown.
func (n *Node) untilTold(timeout time.Duration, send func(time.Duration) error, started func() bool) error {
	if n.table.nobodyToTell() {
		// Still called, for the state it changes; memberlist waits
		// forever on a timeout of 0.
		_ = send(time.Millisecond)
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- send(timeout) }()
	tick := time.NewTicker(tellPoll)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			if n.table.nobodyToTell() && started() {
				return nil
			}
		}
	}
}

// Shutdown stops gossip without leaving (others will see a failure unless
// Leave came first) and stops every goroutine of the node. Safe to call
// more than once and from several goroutines; it must not be called from
// OnChange.
func (n *Node) Shutdown() error {
	n.closeOnce.Do(func() {
		close(n.done)
		n.cancel()
	})
	n.opMu.Lock()
	var err error
	if !n.closed {
		n.closed = true
		err = n.ml.Shutdown()
	}
	n.opMu.Unlock()
	n.wg.Wait()
	return err
}

func (n *Node) isClosed() bool { return isDone(n.done) }

// markDirty tells the event loop the view changed. It never blocks: one
// pending signal stands for any number of changes.
func (n *Node) markDirty() {
	select {
	case n.dirty <- struct{}{}:
	default:
	}
}

// maxLoggedServices bounds formatServices: a node may advertise 64 KiB of
// services, too much for a line on every node at each of its changes.
const maxLoggedServices = 512

// formatServices renders services for a log line: "thumbs=h:1 web=h:2,h:3",
// cut short past maxLoggedServices bytes with how many there are in all.
func formatServices(s map[string][]string) string {
	var b strings.Builder
	for i, name := range sortedKeys(s) {
		if b.Len() > maxLoggedServices {
			total := 0
			for _, insts := range s {
				total += len(insts)
			}
			fmt.Fprintf(&b, " ... (%d services, %d instances in all)", len(s), total)
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(strings.Join(s[name], ","))
	}
	return b.String()
}
