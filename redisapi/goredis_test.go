package redisapi

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func goRedis(t *testing.T, addr string, opt redis.Options) *redis.Client {
	t.Helper()
	opt.Addr = addr
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		opt.Network, opt.Addr = "unix", path
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = 5*time.Second, 5*time.Second, 5*time.Second
	opt.MaxRetries = -1 // an error must show, not be retried away
	c := redis.NewClient(&opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestGoRedis runs every command through go-redis v9 with its defaults:
// it starts with HELLO 3, falls back to RESP2 on our NOPROTO, and sends
// CLIENT SETINFO on every new connection.
func TestGoRedis(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			cfg := Config{DBs: map[int]string{1: "thumbs", 2: "empty"}, Members: func() int { return 7 }}
			if network == "unix" {
				cfg.Addr = "unix:" + filepath.Join(t.TempDir(), "ringman.sock")
			}
			s := startServer(t, cfg)
			ctx := context.Background()
			c := goRedis(t, s.Addr(), redis.Options{ClientName: "tester"})
			r := s.router

			if got, err := c.Get(ctx, "/some/key").Result(); err != nil || got != owner(t, r, "web", "/some/key") {
				t.Errorf("GET = %q, %v; want %q", got, err, owner(t, r, "web", "/some/key"))
			}
			keys := []string{"a", "b", "example.com/x"}
			vals, err := c.MGet(ctx, keys...).Result()
			if err != nil || len(vals) != len(keys) {
				t.Fatalf("MGET = %v, %v", vals, err)
			}
			for i, k := range keys {
				if vals[i] != owner(t, r, "web", k) {
					t.Errorf("MGET[%d] = %v, want %q", i, vals[i], owner(t, r, "web", k))
				}
			}
			if got, err := c.Ping(ctx).Result(); err != nil || got != "PONG" {
				t.Errorf("PING = %q, %v", got, err)
			}
			if got, err := c.Do(ctx, "ping", "hi there").Text(); err != nil || got != "hi there" {
				t.Errorf("PING msg = %q, %v", got, err)
			}
			if got, err := c.Echo(ctx, "a\r\nb").Result(); err != nil || got != "a\r\nb" {
				t.Errorf("ECHO = %q, %v", got, err)
			}
			if got, err := c.ClientGetName(ctx).Result(); err != nil || got != "tester" {
				t.Errorf("CLIENT GETNAME = %q, %v (want the name go-redis set on connect)", got, err)
			}
			if id, err := c.ClientID(ctx).Result(); err != nil || id <= 0 {
				t.Errorf("CLIENT ID = %d, %v", id, err)
			}
			info, err := c.Info(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"# Server\r\n", "ringman_version:1.2.3-test\r\n", "uptime_in_seconds:",
				"# Stats\r\n", "lookups_served:4\r\n", "members:7\r\n", "instances_web:3\r\n",
				"instances_thumbs:1\r\n", "instances_empty:0\r\n", "connected_clients:1\r\n"} {
				if !strings.Contains(info, want) {
					t.Errorf("INFO lacks %q:\n%s", want, info)
				}
			}
			if m, err := c.InfoMap(ctx, "stats").Result(); err != nil || m["Stats"]["lookups_served"] != "4" {
				t.Errorf("INFO stats parsed by go-redis = %v, %v", m, err)
			}
			if s.Lookups() != 4 {
				t.Errorf("Lookups() = %d, want 4", s.Lookups())
			}

			cmds, err := c.Command(ctx).Result()
			if err != nil {
				t.Fatalf("COMMAND: %v", err)
			}
			if cmds["get"] == nil || cmds["get"].Arity != 2 || !cmds["get"].ReadOnly || cmds["ring.lookup"] == nil {
				t.Errorf("COMMAND get = %+v, ring.lookup = %+v", cmds["get"], cmds["ring.lookup"])
			}
			if n, err := c.Do(ctx, "command", "count").Int(); err != nil || n != len(commandTable) {
				t.Errorf("COMMAND COUNT = %d, %v", n, err)
			}
			if docs, err := c.Do(ctx, "command", "docs", "get").Slice(); err != nil || len(docs) != 2 || docs[0] != "get" {
				t.Errorf("COMMAND DOCS get = %v, %v", docs, err)
			}
			if list, err := c.Do(ctx, "command", "list").StringSlice(); err != nil || len(list) != len(commandTable) {
				t.Errorf("COMMAND LIST = %v, %v", list, err)
			}

			cands, err := c.Do(ctx, "ring.lookup", "k1", 3).StringSlice()
			if err != nil || len(cands) != 3 || cands[0] != owner(t, r, "web", "k1") {
				t.Errorf("RING.LOOKUP k1 3 = %v, %v", cands, err)
			}
			if cands, err := c.Do(ctx, "RING.LOOKUP", "k1", 5, "thumbs").StringSlice(); err != nil || len(cands) != 1 || cands[0] != "10.0.1.1:8080" {
				t.Errorf("RING.LOOKUP thumbs = %v, %v", cands, err)
			}
			if cands, err := c.Do(ctx, "ring.lookup", "k1", 2, "nosuch").StringSlice(); err == nil || !strings.HasPrefix(err.Error(), "NOSERVICE ") {
				t.Errorf("RING.LOOKUP on an unknown service = %v, %v; want a NOSERVICE error", cands, err)
			}
			if _, err := c.Do(ctx, "ring.lookup", "k1", 0).Result(); err == nil {
				t.Errorf("RING.LOOKUP with count 0 succeeded")
			}
			if m, err := c.Do(ctx, "ring.members").StringSlice(); err != nil || strings.Join(m, ",") != "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80" {
				t.Errorf("RING.MEMBERS = %v, %v", m, err)
			}
			if m, err := c.Do(ctx, "ring.members", "thumbs").StringSlice(); err != nil || len(m) != 1 {
				t.Errorf("RING.MEMBERS thumbs = %v, %v", m, err)
			}

			// HELLO on a dedicated connection (it changes connection state).
			conn := c.Conn()
			defer conn.Close()
			hello, err := conn.Hello(ctx, 2, "", "", "").Result()
			if err != nil || hello["server"] != "ringman" || hello["proto"] != int64(2) || hello["version"] != "1.2.3-test" {
				t.Errorf("HELLO 2 = %v, %v", hello, err)
			}
			if _, err := conn.Hello(ctx, 3, "", "", "").Result(); err == nil ||
				err.Error() != "NOPROTO sorry, this protocol version is not supported" {
				t.Errorf("HELLO 3 error = %v", err)
			}
			// SELECT picks the service; unmapped dbs are refused.
			if err := conn.Select(ctx, 1).Err(); err != nil {
				t.Fatal(err)
			}
			if got, err := conn.Get(ctx, "anything").Result(); err != nil || got != "10.0.1.1:8080" {
				t.Errorf("GET on db 1 = %q, %v", got, err)
			}
			if err := conn.Select(ctx, 2).Err(); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Get(ctx, "anything").Result(); !errors.Is(err, redis.Nil) {
				t.Errorf("GET on an empty service = %v, want redis.Nil", err)
			}
			if err := conn.Select(ctx, 3).Err(); err == nil || err.Error() != "ERR DB index is out of range" {
				t.Errorf("SELECT 3 = %v", err)
			}
			if _, err := conn.Get(ctx, "anything").Result(); !errors.Is(err, redis.Nil) {
				t.Errorf("a failed SELECT changed the db: GET = %v, want redis.Nil", err)
			}
			if err := conn.ClientSetName(ctx, "x y").Err(); err == nil {
				t.Errorf("CLIENT SETNAME with a space succeeded")
			}

			// go-redis selecting a db at connect time.
			c1 := goRedis(t, s.Addr(), redis.Options{DB: 1})
			if got, err := c1.Get(ctx, "k").Result(); err != nil || got != "10.0.1.1:8080" {
				t.Errorf("GET through a DB 1 client = %q, %v", got, err)
			}

			// Errors in Redis's shapes.
			if _, err := c.Do(ctx, "flushall").Result(); err == nil ||
				err.Error() != "ERR unknown command 'flushall', with args beginning with: " {
				t.Errorf("unknown command error = %v", err)
			}
			if _, err := c.Do(ctx, "GET").Result(); err == nil ||
				err.Error() != "ERR wrong number of arguments for 'get' command" {
				t.Errorf("arity error = %v", err)
			}
		})
	}
}

func TestGoRedisAuth(t *testing.T) {
	s := startServer(t, Config{RequirePass: "s3cret"})
	ctx := context.Background()

	// Without a password: go-redis connects, commands get NOAUTH.
	c := goRedis(t, s.Addr(), redis.Options{})
	if err := c.Get(ctx, "k").Err(); err == nil || err.Error() != "NOAUTH Authentication required." {
		t.Errorf("GET without AUTH = %v", err)
	}
	if err := c.Ping(ctx).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		t.Errorf("PING without AUTH = %v (Redis 7 wants AUTH for PING)", err)
	}
	// Wrong password: go-redis reports the failed handshake.
	bad := goRedis(t, s.Addr(), redis.Options{Password: "nope"})
	if err := bad.Get(ctx, "k").Err(); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Errorf("GET with a wrong password = %v", err)
	}
	// Right password, with and without the user name.
	for _, user := range []string{"", "default"} {
		ok := goRedis(t, s.Addr(), redis.Options{Username: user, Password: "s3cret"})
		if got, err := ok.Get(ctx, "k").Result(); err != nil || got != owner(t, s.router, "web", "k") {
			t.Errorf("user %q: GET = %q, %v", user, got, err)
		}
	}
	// AUTH on an open connection.
	conn := c.Conn()
	defer conn.Close()
	if err := conn.Auth(ctx, "wrong").Err(); err == nil ||
		err.Error() != "WRONGPASS invalid username-password pair or user is disabled." {
		t.Errorf("AUTH wrong = %v", err)
	}
	if err := conn.AuthACL(ctx, "admin", "s3cret").Err(); err == nil {
		t.Errorf("AUTH as a user other than default succeeded")
	}
	if err := conn.Auth(ctx, "s3cret").Err(); err != nil {
		t.Fatal(err)
	}
	if err := conn.Get(ctx, "k").Err(); err != nil {
		t.Errorf("GET after AUTH = %v", err)
	}
}
