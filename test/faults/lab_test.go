package faults

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The lab's names all start with namePrefix and carry the run's id, so that
// two runs never touch each other's namespaces, links or tables, and a later
// run can sweep what a crashed one left behind:
//
//	rmf-<id>-hub      the hub namespace: the bridge br0, one port per node
//	                  (v<i>) and one (uplink) towards the root namespace
//	rmf<id>h          the one link in the root namespace: the test's end of
//	                  the hub's "uplink" pair, at 10.A.B.254/24
//	rmf-<id>-n<i>     node i's namespace; eth0 is the other end of v<i>
//	rmf_<id>          the nftables table on each node's eth0
//
// The bridge sits in a namespace of its own so that bridged traffic never
// meets the host's firewall (with br_netfilter, a bridge in the root
// namespace passes its frames through the host's FORWARD rules, which a
// machine running Docker drops). Deleting the hub deletes the bridge and
// every veth pair.
//
// A run holds an exclusive flock on lockDir/<id>.lock while it lives: the
// sweep removes only the ids whose lock is free (their run is gone).
const (
	// Listening ports of the daemons are picked in [listenLow, listenHigh);
	// the namespaces' ephemeral ports (dials, port 0) come from above.
	listenLow  = 20000
	listenHigh = 40000
	ephemeral  = "40000 60999"

	namePrefix = "rmf"
	lockDir    = "/run/ringman-faults"
	netnsDir   = "/run/netns"
	// cmdTimeout bounds one ip or nft command.
	cmdTimeout = 10 * time.Second
)

var (
	nsName   = regexp.MustCompile(`^rmf-([0-9a-f]{6})-(n\d+|hub)$`)
	linkName = regexp.MustCompile(`^rmf([0-9a-f]{6})h$`)
)

// lab is the suite's network: a bridge in the hub namespace, which the
// test process reaches from the root namespace at hostIP to talk to every
// node's HTTP API and backend, and one namespace per node. Faults are
// nftables rules on a node's eth0; they spare the test's own address, so
// the test keeps observing a node that is cut off from its peers.
type lab struct {
	id     string
	subnet string // "10.A.B."; nodes are .1-.99, moved nodes .101-.199
	hostIP string // 10.A.B.254, on uplink
	hub    string // the hub namespace
	uplink string // the root namespace's link to the hub
	table  string
	lock   *os.File

	mu     sync.Mutex
	spaces []*netns
}

// netns is one node's namespace.
type netns struct {
	lab   *lab
	name  string
	port  string // its veth's end on the bridge, in the hub
	index int
}

// newLab sweeps what crashed runs left, then creates the hub. Close
// removes everything the lab made.
func newLab(ctx context.Context) (*lab, error) {
	sweep(ctx)
	l := &lab{}
	var id [3]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	l.id = hex.EncodeToString(id[:])
	l.hub = fmt.Sprintf("%s-%s-hub", namePrefix, l.id)
	l.uplink = namePrefix + l.id + "h"
	l.table = namePrefix + "_" + l.id
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		return nil, err
	}
	// The lock appears under its name already held, so that a concurrent
	// sweep never takes it for a dead run's.
	path := filepath.Join(lockDir, l.id+".lock")
	lock, err := os.OpenFile(path+".new", os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		os.Remove(lock.Name())
		return nil, fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	if err := os.Rename(lock.Name(), path); err != nil {
		lock.Close()
		os.Remove(lock.Name())
		return nil, err
	}
	l.lock = lock
	if l.subnet, err = freeSubnet(ctx); err != nil {
		l.Close()
		return nil, err
	}
	l.hostIP = l.subnet + "254"
	for _, args := range [][]string{
		{"netns", "add", l.hub},
		{"-n", l.hub, "link", "add", "br0", "type", "bridge"},
		{"-n", l.hub, "link", "set", "br0", "up"},
		{"link", "add", l.uplink, "type", "veth", "peer", "name", "uplink", "netns", l.hub},
		{"-n", l.hub, "link", "set", "dev", "uplink", "master", "br0", "up"},
		{"addr", "add", l.hostIP + "/24", "dev", l.uplink},
		{"link", "set", l.uplink, "up"},
	} {
		if err := run(ctx, "ip", args...); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// freeSubnet picks a 10.A.B.0/24 that no route or address of the root
// namespace overlaps.
func freeSubnet(ctx context.Context) (string, error) {
	out, err := output(ctx, "ip", "-4", "-o", "route", "show", "table", "all")
	if err != nil {
		return "", err
	}
	addrs, err := output(ctx, "ip", "-4", "-o", "addr", "show")
	if err != nil {
		return "", err
	}
	var taken []*net.IPNet
	for _, f := range strings.Fields(out + " " + addrs) {
		if _, n, err := net.ParseCIDR(f); err == nil {
			taken = append(taken, n)
		} else if ip := net.ParseIP(f); ip != nil && ip.To4() != nil {
			taken = append(taken, &net.IPNet{IP: ip.To4(), Mask: net.CIDRMask(32, 32)})
		}
	}
	for range 100 {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		a := 100 + int(b[0])%150
		cand := &net.IPNet{IP: net.IPv4(10, byte(a), b[1], 0).To4(), Mask: net.CIDRMask(24, 32)}
		clash := false
		for _, t := range taken {
			if t.Contains(cand.IP) || cand.Contains(t.IP) {
				clash = true
				break
			}
		}
		if !clash {
			return fmt.Sprintf("10.%d.%d.", a, b[1]), nil
		}
	}
	return "", errors.New("no free 10.x.y.0/24 subnet found for the lab")
}

// addNamespace creates node i's namespace, with eth0 at subnet.i on the
// bridge and the lab's nftables table (empty chains, everything passes).
func (l *lab) addNamespace(ctx context.Context, i int) (*netns, error) {
	ns := &netns{lab: l, name: fmt.Sprintf("%s-%s-n%d", namePrefix, l.id, i), port: fmt.Sprintf("v%d", i), index: i}
	l.mu.Lock()
	l.spaces = append(l.spaces, ns)
	l.mu.Unlock()
	for _, args := range [][]string{
		{"netns", "add", ns.name},
		{"-n", l.hub, "link", "add", ns.port, "type", "veth", "peer", "name", "eth0", "netns", ns.name},
		{"-n", l.hub, "link", "set", ns.port, "master", "br0", "up"},
		{"-n", ns.name, "link", "set", "lo", "up"},
		{"-n", ns.name, "addr", "add", ns.homeIP() + "/24", "dev", "eth0"},
		{"-n", ns.name, "link", "set", "eth0", "up"},
		{"netns", "exec", ns.name, "sh", "-c", "echo " + ephemeral + " > /proc/sys/net/ipv4/ip_local_port_range"},
	} {
		if err := run(ctx, "ip", args...); err != nil {
			return ns, err
		}
	}
	// Faults go into chains of their own, so that healing is a flush. The
	// chains hook eth0 itself (netdev ingress and egress), not the IP
	// stack's input and output: a packet dropped on output fails the
	// sender's sendto with EPERM, which no real network does and which
	// memberlist takes as an immediate probe failure. At the device, a
	// dropped packet is lost silently, as on a wire.
	rules := fmt.Sprintf(`table netdev %s {
	chain cut_in { }
	chain cut_out { }
	chain loss_in { }
	chain loss_out { }
	chain ingress { type filter hook ingress device "eth0" priority filter; policy accept; jump cut_in; jump loss_in; }
	chain egress { type filter hook egress device "eth0" priority filter; policy accept; jump cut_out; jump loss_out; }
}
`, l.table)
	if err := ns.nftInput(ctx, rules); err != nil {
		return ns, err
	}
	return ns, nil
}

// homeIP is the namespace's first address; movedIP the one a node moves to.
func (ns *netns) homeIP() string  { return ns.lab.subnet + strconv.Itoa(ns.index) }
func (ns *netns) movedIP() string { return ns.lab.subnet + strconv.Itoa(100+ns.index) }

// readdress replaces the namespace's address (no process may use it).
func (ns *netns) readdress(ctx context.Context, from, to string) error {
	// The old one first: deleting a primary address deletes the secondaries.
	if err := run(ctx, "ip", "-n", ns.name, "addr", "del", from+"/24", "dev", "eth0"); err != nil {
		return err
	}
	return run(ctx, "ip", "-n", ns.name, "addr", "add", to+"/24", "dev", "eth0")
}

// cut drops every packet between this namespace and peers, both ways.
func (ns *netns) cut(ctx context.Context, peers []string) error {
	if len(peers) == 0 {
		return nil
	}
	set := "{ " + strings.Join(peers, ", ") + " }"
	if err := ns.nft(ctx, "add", "rule", "netdev", ns.lab.table, "cut_in", "ip", "saddr", set, "drop"); err != nil {
		return err
	}
	return ns.nft(ctx, "add", "rule", "netdev", ns.lab.table, "cut_out", "ip", "daddr", set, "drop")
}

// lose drops one packet in ten at random (numgen; tc netem is not available
// on these machines) in each direction on eth0, except the test's own: a
// packet crossing the link is lost with probability 0.1, a round trip with
// 0.19.
func (ns *netns) lose(ctx context.Context) error {
	if err := ns.nft(ctx, "add", "rule", "netdev", ns.lab.table, "loss_in", "ip", "saddr", "!=", ns.lab.hostIP,
		"counter", "numgen", "random", "mod", "10", "==", "0", "counter", "drop"); err != nil {
		return err
	}
	return ns.nft(ctx, "add", "rule", "netdev", ns.lab.table, "loss_out", "ip", "daddr", "!=", ns.lab.hostIP,
		"counter", "numgen", "random", "mod", "10", "==", "0", "counter", "drop")
}

// lossCounters returns the packets the loss rules saw and dropped.
func (ns *netns) lossCounters(ctx context.Context) (seen, dropped int64, err error) {
	for _, chain := range []string{"loss_in", "loss_out"} {
		out, err := output(ctx, "ip", "netns", "exec", ns.name, "nft", "list", "chain", "netdev", ns.lab.table, chain)
		if err != nil {
			return 0, 0, err
		}
		m := regexp.MustCompile(`counter packets (\d+)`).FindAllStringSubmatch(out, -1)
		if len(m) != 2 {
			return 0, 0, fmt.Errorf("loss counters of %s/%s: want 2, got %d in %q", ns.name, chain, len(m), out)
		}
		a, _ := strconv.ParseInt(m[0][1], 10, 64)
		b, _ := strconv.ParseInt(m[1][1], 10, 64)
		seen += a
		dropped += b
	}
	return seen, dropped, nil
}

// heal removes every fault of the namespace.
func (ns *netns) heal(ctx context.Context) error {
	var rules strings.Builder
	for _, chain := range []string{"cut_in", "cut_out", "loss_in", "loss_out"} {
		fmt.Fprintf(&rules, "flush chain netdev %s %s\n", ns.lab.table, chain)
	}
	return ns.nftInput(ctx, rules.String())
}

func (ns *netns) nft(ctx context.Context, args ...string) error {
	return run(ctx, "ip", append([]string{"netns", "exec", ns.name, "nft"}, args...)...)
}

func (ns *netns) nftInput(ctx context.Context, rules string) error {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f in %s: %w: %s", ns.name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// listen opens a listener inside the namespace: the socket belongs to the
// namespace it was created in, whichever thread later uses it. The thread
// enters the namespace and comes back; if it cannot come back it is not
// unlocked, so that Go ends it instead of reusing it.
func (ns *netns) listen(network, addr string) (ln net.Listener, pc net.PacketConn, err error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		home, e := os.Open("/proc/thread-self/ns/net")
		if e != nil {
			err = e
			runtime.UnlockOSThread()
			return
		}
		defer home.Close()
		target, e := os.Open(filepath.Join(netnsDir, ns.name))
		if e != nil {
			err = e
			runtime.UnlockOSThread()
			return
		}
		defer target.Close()
		if e := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); e != nil {
			err = fmt.Errorf("enter %s: %w", ns.name, e)
			runtime.UnlockOSThread()
			return
		}
		if strings.HasPrefix(network, "udp") {
			pc, err = net.ListenPacket(network, addr)
		} else {
			ln, err = net.Listen(network, addr)
		}
		if e := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); e != nil {
			err = errors.Join(err, fmt.Errorf("leave %s: %w", ns.name, e))
			return // the thread stays locked and dies with this goroutine
		}
		runtime.UnlockOSThread()
	}()
	<-done
	return ln, pc, err
}

// freePort returns a port free for TCP and UDP at ip inside the namespace,
// other than avoid (ports picked before and not bound yet), below the
// namespace's ephemeral range: the node binds it after it has begun to dial
// its peers, and a dial must not take it first. Only the node of this
// namespace binds there, so it stays free.
func (ns *netns) freePort(ip string, avoid ...int) (int, error) {
	for range 50 {
		port := listenLow + mrand.IntN(listenHigh-listenLow)
		if slices.Contains(avoid, port) {
			continue
		}
		ln, _, err := ns.listen("tcp4", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			continue
		}
		_, pc, err := ns.listen("udp4", ln.Addr().String())
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free TCP+UDP port at %s in %s", ip, ns.name)
}

// Close removes every namespace (the veths, the bridge and the tables go
// with them) and the lock. It is best effort and reports what it could not
// do.
func (l *lab) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	l.mu.Lock()
	spaces := l.spaces
	l.spaces = nil
	l.mu.Unlock()
	for _, ns := range spaces {
		_ = ns.nft(ctx, "delete", "table", "netdev", l.table)
		errs = append(errs, delNamespace(ctx, ns.name))
	}
	if l.hub != "" {
		errs = append(errs, delNamespace(ctx, l.hub))
	}
	// The uplink goes with its peer in the hub, asynchronously.
	if l.uplink != "" && linkExists(l.uplink) {
		if err := run(ctx, "ip", "link", "del", l.uplink); err != nil && linkExists(l.uplink) {
			errs = append(errs, err)
		}
	}
	if l.lock != nil {
		os.Remove(filepath.Join(lockDir, l.id+".lock"))
		l.lock.Close()
	}
	return errors.Join(errs...)
}

func delNamespace(ctx context.Context, name string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, name)); err != nil {
		return nil
	}
	return run(ctx, "ip", "netns", "del", name)
}

// leftovers lists the lab names present on the machine: namespaces and
// links, by run id.
func leftovers(ctx context.Context) (spaces, links map[string][]string) {
	spaces, links = map[string][]string{}, map[string][]string{}
	if entries, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range entries {
			if m := nsName.FindStringSubmatch(e.Name()); m != nil {
				spaces[m[1]] = append(spaces[m[1]], e.Name())
			}
		}
	}
	if out, err := output(ctx, "ip", "-o", "link", "show"); err == nil {
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if m := linkName.FindStringSubmatch(name); m != nil {
				links[m[1]] = append(links[m[1]], name)
			}
		}
	}
	return spaces, links
}

// sweep removes, best effort, what runs that no longer live left behind.
func sweep(ctx context.Context) {
	spaces, links := leftovers(ctx)
	ids := map[string]bool{}
	for id := range spaces {
		ids[id] = true
	}
	for id := range links {
		ids[id] = true
	}
	if entries, err := os.ReadDir(lockDir); err == nil {
		for _, e := range entries {
			if id, ok := strings.CutSuffix(e.Name(), ".lock"); ok {
				ids[id] = true
			}
		}
	}
	for id := range ids {
		path := filepath.Join(lockDir, id+".lock")
		if f, err := os.OpenFile(path, os.O_RDWR, 0); err == nil {
			err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
			if err != nil {
				f.Close()
				continue // its run is alive
			}
			defer f.Close()
		}
		for _, ns := range spaces[id] {
			_ = delNamespace(ctx, ns)
		}
		for _, link := range links[id] {
			if linkExists(link) {
				_ = run(ctx, "ip", "link", "del", link)
			}
		}
		os.Remove(path)
	}
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

func run(ctx context.Context, name string, args ...string) error {
	_, err := output(ctx, name, args...)
	return err
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
