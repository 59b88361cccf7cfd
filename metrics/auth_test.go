package metrics

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"ringman/redisapi"
	"ringman/ring"
	"ringman/router"
)

// A wrong RESP password, sent by a real client to the real server, shows in
// ringman_resp_auth_failures_total; the right one does not.
func TestRESPAuthFailures(t *testing.T) {
	rt, err := router.New(ring.DefaultSettings(), "web")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := redisapi.Listen(redisapi.Config{Addr: "127.0.0.1:0", Router: rt, RequirePass: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	reg := prometheus.NewRegistry()
	if err := New().Register(reg, Sources{RESP: srv.Stats}); err != nil {
		t.Fatal(err)
	}
	if got := sample(gather(t, reg), "ringman_resp_auth_failures_total", "", ""); got != 0 {
		t.Fatalf("ringman_resp_auth_failures_total = %v before any AUTH, want 0", got)
	}

	c, err := net.DialTimeout("tcp", srv.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	for _, tc := range []struct{ req, reply string }{
		{"*2\r\n$4\r\nAUTH\r\n$5\r\nguess\r\n", "-WRONGPASS"},
		{"AUTH default nope\r\n", "-WRONGPASS"},
		{"*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n", "+OK"},
	} {
		if _, err := c.Write([]byte(tc.req)); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, tc.reply) {
			t.Fatalf("%q: %q, %v; want %s", tc.req, line, err, tc.reply)
		}
	}
	if got := sample(gather(t, reg), "ringman_resp_auth_failures_total", "", ""); got != 2 {
		t.Errorf("ringman_resp_auth_failures_total = %v, want 2", got)
	}
}
