package daemon

import (
	"fmt"
	"net"
	"strings"
)

// protectedMode returns a warning for each listener that other hosts can
// reach (not loopback, not a unix socket) and that has no secret: the API
// without --api-token, RESP without --requirepass. Like Redis's protected
// mode, but it warns instead of refusing: binding a private address is
// often meant (nginx on another host), and it is never silent.
func protectedMode(httpAddr, respAddr string, token, pass bool) []string {
	var out []string
	if where, ok := reachable(httpAddr); ok && !token {
		out = append(out, fmt.Sprintf("the HTTP API on %s is reachable from other hosts and has no --api-token: "+
			"anyone who can reach it can change overrides and gossip keys, drain or stop this node, and read the gossip keys", where))
	}
	if where, ok := reachable(respAddr); ok && !pass {
		out = append(out, fmt.Sprintf("RESP on %s is reachable from other hosts and has no --requirepass: "+
			"anyone who can reach it can look up routes and list instances", where))
	}
	return out
}

// reachable reports whether a listener's address (as the listener gives
// it: an IP, or unix:/path) accepts connections from other hosts, and
// describes it.
func reachable(addr string) (string, bool) {
	if strings.HasPrefix(addr, "unix:") {
		return addr, false
	}
	host, _, err := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	switch {
	case err != nil || ip == nil:
		return addr, true // unknown: say so rather than stay silent
	case ip.IsUnspecified():
		return addr + " (every interface)", true
	}
	return addr, !ip.IsLoopback()
}

// gossipWarning returns a warning when gossip, bound to bindAddr, is
// reachable from other hosts and not encrypted: anyone who reaches the
// port can join the cluster and advertise instances that get traffic.
func gossipWarning(bindAddr string, encrypted bool) []string {
	if where, ok := reachable(bindAddr); ok && !encrypted {
		return []string{fmt.Sprintf("gossip on %s is reachable from other hosts and not encrypted (no --encrypt): "+
			"anyone who can reach it can join the cluster, advertise instances that receive traffic, and change overrides", where)}
	}
	return nil
}
