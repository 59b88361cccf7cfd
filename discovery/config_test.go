package discovery

import (
	"context"
	"strings"
	"testing"
)

func TestParseHostPort(t *testing.T) {
	cases := []struct {
		addr, ip string
		port     int
		err      string
	}{
		{addr: "127.0.0.1:0", ip: "127.0.0.1", port: 0},
		{addr: ":7946", ip: "0.0.0.0", port: 7946},
		{addr: "[::1]:65535", ip: "::1", port: 65535},
		{addr: "localhost:80", ip: "127.0.0.1", port: 80},
		{addr: "127.0.0.1", err: "want host:port"},
		{addr: "127.0.0.1:65536", err: "port must be a number from 0 to 65535"},
		{addr: "127.0.0.1:-1", err: "port must be a number from 0 to 65535"},
		{addr: "127.0.0.1:http", err: "port must be a number from 0 to 65535"},
		{addr: "no-such-host.invalid:1", err: "cannot resolve no-such-host.invalid"},
	}
	for _, tc := range cases {
		ip, port, err := ParseHostPort(context.Background(), tc.addr)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: %q, %d, %v; want an error with %q", tc.addr, ip, port, err, tc.err)
		case tc.err != "" && strings.Contains(err.Error(), "\n"):
			t.Errorf("%q: error %q spans lines", tc.addr, err)
		case tc.err == "" && (err != nil || ip != tc.ip || port != tc.port):
			t.Errorf("%q: %q, %d, %v; want %q, %d", tc.addr, ip, port, err, tc.ip, tc.port)
		}
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := ParseHostPort(cancelled, "no-such-host.invalid:1"); err == nil {
		t.Error("a name resolved with a cancelled context")
	}
}
