package discovery

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// joinTargets cleans a list of seeds and known peers: trimmed, deduplicated,
// without this node's own address. A seed that is this node is an operator's
// mistake (a --join without a port means this node's own port), so it is
// warned about; a known peer that is, is stale and dropped quietly. It also
// reports how many seeds were this node.
func (n *Node) joinTargets(seeds, peers []string) (targets []string, selfSeeds int) {
	seen := map[string]bool{}
	for i, a := range append(slices.Clone(seeds), peers...) {
		a = strings.TrimSpace(a)
		if a == "" || seen[a] {
			continue
		}
		seen[a] = true
		if _, self := n.joinAddrs(a); self {
			if i < len(seeds) {
				selfSeeds++
				n.log.Warn("join address is this node's own gossip address; skipped", "addr", a, "self", n.addr)
			} else {
				n.log.Debug("known peer is this node's own address; skipped", "addr", a)
			}
			continue
		}
		targets = append(targets, a)
	}
	return targets, selfSeeds
}

// joinAddrs resolves a join address the way memberlist does ("[name/]host
// [:port]", the port defaulting to the bound port) and returns the addresses
// to give memberlist instead, without those that reach this node itself.
// self is true when every address it resolves to is this node: memberlist
// would then exchange state with itself and call that a successful join.
// An address that does not resolve is returned as it is, for memberlist to
// report.
func (n *Node) joinAddrs(addr string) (addrs []string, self bool) {
	prefix, hostPort := "", addr
	if i := strings.IndexByte(addr, '/'); i > 0 {
		prefix, hostPort = addr[:i+1], addr[i+1:]
	}
	host, portStr, err := net.SplitHostPort(hostPort)
	if err != nil {
		host, portStr = strings.Trim(hostPort, "[]"), strconv.Itoa(n.self.bindPort)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return []string{addr}, false
	}
	var ips []net.IP
	if ip := net.ParseIP(host); ip != nil {
		ips = []net.IP{ip}
	} else if ips, err = net.LookupIP(host); err != nil || len(ips) == 0 {
		return []string{addr}, false
	}
	var others []string
	for _, ip := range ips {
		if !n.self.reaches(ip, int(port)) {
			others = append(others, prefix+net.JoinHostPort(ip.String(), portStr))
		}
	}
	switch {
	case len(others) == 0:
		return nil, true
	case len(others) == len(ips):
		return []string{addr}, false
	}
	return others, false
}

// gossipListener is where this node's gossip listener is reached: what a
// join address is compared with, so that a node never joins itself.
type gossipListener struct {
	bindIP   net.IP // may be 0.0.0.0 or ::
	bindPort int    // the bound port, also the default port of join addresses
	advIP    net.IP // the advertised address
	advPort  int
}

// reaches reports whether ip:port is this listener: its advertised
// address, or its bound one (any local address when bound to 0.0.0.0 or
// ::).
func (l gossipListener) reaches(ip net.IP, port int) bool {
	if port == l.advPort && ip.Equal(l.advIP) {
		return true
	}
	if port != l.bindPort {
		return false
	}
	if ip.Equal(l.bindIP) {
		return true
	}
	if !l.bindIP.IsUnspecified() {
		return false
	}
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range ifAddrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// joinLoop joins targets in the background until one answers, waiting
// longer after each failed round (jittered, capped at joinBackoffMax).
func (n *Node) joinLoop(targets []string) {
	defer n.wg.Done()
	wait := n.tun.joinBackoffMin
	lastErr := ""
	for attempt := 1; ; attempt++ {
		order := append([]string(nil), targets...)
		rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		count, err := n.join(order, joinFirstAnswer)
		if n.isClosed() {
			return
		}
		if count > 0 {
			n.joined.Store(true)
			n.log.Info("joined cluster", "answered", count, "attempts", attempt, "members", n.ml.NumMembers())
			return
		}
		// The same error every few seconds is noise: say it again only
		// when it changes.
		if msg := err.Error(); msg != lastErr {
			n.log.Warn("cannot join cluster yet; retrying in the background", "err", err)
			lastErr = msg
		} else {
			n.log.Debug("join attempt failed", "attempt", attempt, "err", err)
		}
		// ±20% jitter keeps restarted nodes from retrying in lockstep.
		d := time.Duration(float64(wait) * (0.8 + 0.4*rand.Float64()))
		t := time.NewTimer(d)
		select {
		case <-n.done:
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(wait*2, n.tun.joinBackoffMax)
	}
}

// joinMode says whose addresses a join contacts.
type joinMode int

const (
	// joinEach is an operator's list (Join): every address is contacted,
	// and one that is this node itself is warned about.
	joinEach joinMode = iota
	// joinFirstAnswer is a background join (seeds and known peers, whose
	// self addresses joinTargets dropped; failed or restarted members): it
	// stops after the first round in which one answered, as memberlist
	// learns the rest of the cluster from it.
	joinFirstAnswer
)

// join contacts addrs, joinParallel at a time, and returns how many
// answered. Addresses that are this node itself are skipped and reported in
// the error; when they are all there is, the error wraps ErrJoinSelf.
func (n *Node) join(addrs []string, mode joinMode) (int, error) {
	var targets, selves []string
	for _, a := range addrs {
		resolved, self := n.joinAddrs(a)
		if self {
			if mode == joinEach {
				n.log.Warn("join address is this node's own gossip address; skipped", "addr", a, "self", n.addr)
			}
			selves = append(selves, a)
			continue
		}
		// One target per address given: memberlist counts a name that
		// resolves to several answering addresses once per address.
		targets = append(targets, strings.Join(resolved, ","))
	}
	if len(targets) == 0 {
		return 0, fmt.Errorf("%w: %s (this node is %s)", ErrJoinSelf, strings.Join(selves, ", "), n.addr)
	}
	total := 0
	var errs []string
	for start := 0; start < len(targets); start += joinParallel {
		batch := targets[start:min(start+joinParallel, len(targets))]
		results := make([]error, len(batch))
		var wg sync.WaitGroup
		for i, a := range batch {
			wg.Go(func() {
				_, results[i] = n.ml.Join(strings.Split(a, ","))
			})
		}
		wg.Wait()
		for _, err := range results {
			if err == nil {
				total++
			} else {
				errs = append(errs, explainJoinError(err)) // names the address
			}
		}
		if mode == joinFirstAnswer && total > 0 {
			break
		}
	}
	if total > 0 {
		return total, nil
	}
	if len(selves) > 0 {
		errs = append(errs, "skipped this node's own address "+strings.Join(selves, ", "))
	}
	return 0, fmt.Errorf("no address answered: %s", strings.Join(errs, "; "))
}

// explainJoinError flattens memberlist's multi-line join error into one
// line and says what the common causes mean.
func explainJoinError(err error) string {
	var parts []string
	var multi interface{ WrappedErrors() []error }
	if errors.As(err, &multi) {
		for _, e := range multi.WrappedErrors() {
			parts = append(parts, e.Error())
		}
	} else {
		parts = append(parts, err.Error())
	}
	msg := strings.Join(parts, "; ")
	lower := strings.ToLower(msg)
	hint := ""
	switch {
	case strings.Contains(lower, "no installed keys could decrypt"):
		hint = "the gossip encryption keys differ"
	case strings.Contains(lower, "encryption is not configured"):
		hint = "the other node encrypts gossip and this one has no key"
	case strings.Contains(lower, "remote state is not encrypted"):
		hint = "this node encrypts gossip and the other does not"
	case strings.Contains(lower, "eof"), strings.Contains(lower, "connection reset"):
		hint = "the other side hung up: a different cluster label or gossip key, or not a ringman gossip port"
	case strings.Contains(lower, "connection refused"):
		hint = "nothing listens there (yet)"
	case strings.Contains(lower, "i/o timeout"):
		hint = "no answer: host down or port filtered"
	}
	if hint != "" {
		return msg + " (" + hint + ")"
	}
	return msg
}
