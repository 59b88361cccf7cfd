package redisapi

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/redis/go-redis/v9"

	"ringman/ring"
	"ringman/router"
)

// decodeTable reads RING.TABLE's reply the way nginx/ringman.lua does and
// returns a function answering up to n candidates for a key from it alone
// (the ring only: the router of this test has no overrides).
func decodeTable(t *testing.T, reply []any) (epoch string, candidates func(key string, n int) []string) {
	t.Helper()
	if len(reply) != 8 {
		t.Fatalf("RING.TABLE reply has %d items, want 8", len(reply))
	}
	s := make([]string, 8)
	for i, v := range reply {
		str, ok := v.(string)
		if !ok {
			t.Fatalf("RING.TABLE item %d is %T, want a bulk string", i+1, v)
		}
		s[i] = str
	}
	if s[0] != "ringman-table/1" || len(s[1]) != 16 || s[2] != "xxhash64" {
		t.Fatalf("RING.TABLE header = %q %q %q", s[0], s[1], s[2])
	}
	parts, _ := strconv.Atoi(s[3])
	width, _ := strconv.Atoi(s[4])
	instances := strings.Split(strings.TrimSuffix(s[5], "\n"), "\n")
	if len(s[6]) != 2*parts*width {
		t.Fatalf("table has %d bytes, want 2×%d×%d", len(s[6]), parts, width)
	}
	if s[7] != "" {
		t.Fatalf("overrides = %q, want none", s[7])
	}
	return s[1], func(key string, n int) []string {
		if width == 0 {
			return nil
		}
		row := int(xxhash.Sum64String(key)%uint64(parts)) * width
		var out []string
		for i := range min(n, width) {
			out = append(out, instances[binary.LittleEndian.Uint16([]byte(s[6][2*(row+i):]))])
		}
		return out
	}
}

func TestRingTable(t *testing.T) {
	r, err := router.New(ring.Settings{Partitions: 1021, Load: ring.DefaultLoad, ReplicationFactor: ring.DefaultReplicationFactor}, "web")
	if err != nil {
		t.Fatal(err)
	}
	r.Update(map[string][]string{"web": {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}, "thumbs": {"10.1.0.1:81"}})
	s := startServer(t, Config{Router: r, DBs: map[int]string{1: "thumbs", 2: "empty"}})
	ctx := context.Background()
	c := goRedis(t, s.Addr(), redis.Options{Protocol: 2})

	check := func(service string) string {
		t.Helper()
		args := []any{"RING.TABLE"}
		if service != "" {
			args = append(args, service)
		}
		reply, err := c.Do(ctx, args...).Slice()
		if err != nil {
			t.Fatalf("RING.TABLE %s: %v", service, err)
		}
		epoch, candidates := decodeTable(t, reply)
		for i := range 1000 {
			key := fmt.Sprintf("example.com/item/%d", i)
			want, err := c.Do(ctx, "RING.LOOKUP", key, 8, cmp.Or(service, "web")).StringSlice()
			if err != nil {
				t.Fatal(err)
			}
			if got := candidates(key, 8); !slices.Equal(got, want) {
				t.Fatalf("service %q, key %q: table gives %q, RING.LOOKUP %q", service, key, got, want)
			}
		}
		return epoch
	}
	web := check("")
	if thumbs := check("thumbs"); thumbs == web {
		t.Fatalf("services web and thumbs share epoch %s", web)
	}
	check("empty") // known, no live instance
	// A service nobody knows has no table either: like GET, RING.TABLE is
	// what nginx asks, and nginx's configs take an empty answer as no route.
	reply, err := c.Do(ctx, "RING.TABLE", "no-such-service").Slice()
	if err != nil {
		t.Fatalf("RING.TABLE no-such-service: %v", err)
	}
	if _, candidates := decodeTable(t, reply); len(candidates("example.com/x", 8)) != 0 {
		t.Fatalf("RING.TABLE no-such-service has candidates")
	}

	// The current epoch gets nil; another epoch, or a change, the table.
	if err := c.Do(ctx, "RING.TABLE", "web", web).Err(); err != redis.Nil {
		t.Fatalf("RING.TABLE web <current epoch> = %v, want nil", err)
	}
	if err := c.Do(ctx, "RING.TABLE", "", web).Err(); err != redis.Nil {
		t.Fatalf("RING.TABLE \"\" <current epoch> (default service) = %v, want nil", err)
	}
	if _, err := c.Do(ctx, "RING.TABLE", "web", "0000000000000000").Slice(); err != nil {
		t.Fatalf("RING.TABLE web <old epoch>: %v, want the table", err)
	}
	r.Update(map[string][]string{"web": {"10.0.0.1:80", "10.0.0.3:80"}, "thumbs": {"10.1.0.1:81"}})
	if now := check("web"); now == web {
		t.Fatal("the epoch did not change with the ring")
	}
	if err := c.Do(ctx, "RING.TABLE", "web", "x", "y").Err(); err == nil || err.Error() != "ERR syntax error" {
		t.Fatalf("RING.TABLE with 3 arguments: %v, want ERR syntax error", err)
	}
}
