package discovery

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// netCut is a network fault between in-process nodes, for partition tests.
// Nodes started with its tunables gossip through a transport that drops
// packets to and from the addresses cut off from theirs and refuses to dial
// them, until heal.
//
// Packets are dropped on both sides (by destination when sent, by source when
// received: a UDP packet comes from the sender's gossip port). Streams are
// refused only by the dialing side, as an accepted TCP connection comes from
// an ephemeral port: a cut is complete between nodes that all use it.
type netCut struct {
	mu  sync.RWMutex
	cut map[[2]string]bool // unordered pairs of gossip addresses, smaller first
}

func newNetCut() *netCut { return &netCut{cut: make(map[[2]string]bool)} }

// tunables returns testTunables whose transports obey c.
func (c *netCut) tunables() tunables {
	tun := testTunables()
	tun.wrapTransport = func(self string, t memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		ct := &cutTransport{NodeAwareTransport: t, self: self, cut: c,
			packets: make(chan *memberlist.Packet), stopping: make(chan struct{}), stopped: make(chan struct{})}
		go ct.relay()
		return ct
	}
	return tun
}

// split cuts every node of left off from every node of right.
func (c *netCut) split(left, right []*testNode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range left {
		for _, r := range right {
			c.cut[pair(l.Addr(), r.Addr())] = true
		}
	}
}

// heal removes every cut.
func (c *netCut) heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.cut)
}

func (c *netCut) blocked(a, b string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cut[pair(a, b)]
}

func pair(a, b string) [2]string {
	if b < a {
		a, b = b, a
	}
	return [2]string{a, b}
}

// cutTransport is a memberlist transport that obeys a netCut.
type cutTransport struct {
	memberlist.NodeAwareTransport
	self    string
	cut     *netCut
	packets chan *memberlist.Packet

	stopping, stopped chan struct{} // Shutdown began, ended
	once, stopOnce    sync.Once
}

// relay forwards the packets that are not cut off. Once Shutdown began it
// no longer waits for memberlist to take them, but keeps reading until the
// inner transport has shut down: that waits for its listener, which may be
// blocked handing the relay a packet.
func (t *cutTransport) relay() {
	in := t.NodeAwareTransport.PacketCh()
	for {
		select {
		case <-t.stopped:
			return
		case p := <-in:
			if t.cut.blocked(t.self, p.From.String()) {
				continue
			}
			select {
			case t.packets <- p:
			case <-t.stopping:
			}
		}
	}
}

func (t *cutTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// WriteTo drops a packet to a cut-off address as a lossy network would:
// silently.
func (t *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.cut.blocked(t.self, addr) {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteTo(b, addr)
}

func (t *cutTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.cut.blocked(t.self, a.Addr) {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteToAddress(b, a)
}

func (t *cutTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.cut.blocked(t.self, addr) {
		return nil, fmt.Errorf("dial %s: connection refused (test network cut)", addr)
	}
	return t.NodeAwareTransport.DialTimeout(addr, timeout)
}

func (t *cutTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.cut.blocked(t.self, a.Addr) {
		return nil, fmt.Errorf("dial %s: connection refused (test network cut)", a.Addr)
	}
	return t.NodeAwareTransport.DialAddressTimeout(a, timeout)
}

func (t *cutTransport) Shutdown() error {
	t.once.Do(func() { close(t.stopping) })
	err := t.NodeAwareTransport.Shutdown()
	t.stopOnce.Do(func() { close(t.stopped) })
	return err
}
