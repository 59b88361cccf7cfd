package daemon

import (
	"strings"
	"testing"
)

func TestProtectedModeAddresses(t *testing.T) {
	for _, tc := range []struct {
		addr string
		warn string // "" for none
	}{
		{"127.0.0.1:7380", ""},
		{"127.0.0.2:7380", ""},
		{"[::1]:7380", ""},
		{"unix:/run/ringman.sock", ""},
		{"0.0.0.0:7380", "0.0.0.0:7380 (every interface)"},
		{"[::]:7380", "[::]:7380 (every interface)"},
		{"10.0.0.5:7380", "10.0.0.5:7380 is reachable"},
		{"[2001:db8::1]:7380", "[2001:db8::1]:7380 is reachable"},
	} {
		w := protectedMode(tc.addr, "127.0.0.1:6380", false, false)
		if (tc.warn == "") != (len(w) == 0) || (len(w) > 0 && !strings.Contains(w[0], tc.warn)) {
			t.Errorf("HTTP API on %s: warnings %q, want one with %q", tc.addr, w, tc.warn)
		}
		if w := protectedMode(tc.addr, tc.addr, true, true); len(w) != 0 {
			t.Errorf("%s with a token and a password: warnings %q", tc.addr, w)
		}
		w = gossipWarning(tc.addr, false)
		if (tc.warn == "") != (len(w) == 0) || (len(w) > 0 && !strings.Contains(w[0], tc.warn)) {
			t.Errorf("unencrypted gossip on %s: warnings %q, want one with %q", tc.addr, w, tc.warn)
		}
		if w := gossipWarning(tc.addr, true); len(w) != 0 {
			t.Errorf("encrypted gossip on %s: warnings %q", tc.addr, w)
		}
	}
}
