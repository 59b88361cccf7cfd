package daemon

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"ringman/httpapi"
)

// TestInstanceIdentityAndWeights, three nodes in one process answering
// 2,000 keys over RESP: an instance restarted at a new address with the
// same id moves no key on any node; a weight changed at run time through
// the API moves keys to that instance only, and every node agrees.
func TestInstanceIdentityAndWeights(t *testing.T) {
	const nkeys = 2000
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("/img/%d.jpg", i)
	}
	logs := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs)
		}
	})
	ca := testConfig(t, "a", logs)
	ca.Services = map[string][]string{"web": {"127.0.0.1:9001,id=web-a", "127.0.0.1:9002,id=web-b,weight=2"}}
	a := startNode(t, ca)
	cb := testConfig(t, "b", logs)
	cb.Services = map[string][]string{"web": {"127.0.0.1:9003,id=web-c"}}
	cb.Join = []string{a.GossipAddr()}
	b := startNode(t, cb)
	router := testConfig(t, "r", logs)
	router.Join = []string{a.GossipAddr()}
	r := startNode(t, router)
	for name, n := range map[string]*Node{"a": a, "b": b, "r": r} {
		waitReady(t, n, name)
	}

	// ask looks every key up on n, in MGETs of 1,000 (the RESP bound is
	// 1,024 arguments).
	clients := map[*Node]*redis.Client{}
	ask := func(n *Node) ([]string, error) {
		c := clients[n]
		if c == nil {
			c = respClient(t, n)
			clients[n] = c
		}
		var out []string
		for from := 0; from < nkeys; from += 1000 {
			args := []any{"MGET"}
			for _, k := range keys[from:min(from+1000, nkeys)] {
				args = append(args, k)
			}
			vals, err := c.Do(context.Background(), args...).StringSlice()
			if err != nil {
				return nil, err
			}
			out = append(out, vals...)
		}
		return out, nil
	}
	// answers asks every node for every key; ok when they all agree and
	// want (if set) holds for each answer.
	answers := func(nodes []*Node, want func(key, backend string) bool) func() (bool, string) {
		return func() (bool, string) {
			var first []string
			for i, n := range nodes {
				vals, err := ask(n)
				if err != nil {
					return false, fmt.Sprintf("node %d: MGET: %v", i, err)
				}
				if i == 0 {
					first = vals
				}
				for j, v := range vals {
					if v != first[j] {
						return false, fmt.Sprintf("key %s: node %d answers %s, node 0 %s", keys[j], i, v, first[j])
					}
					if want != nil && !want(keys[j], v) {
						return false, fmt.Sprintf("key %s: %s", keys[j], v)
					}
				}
			}
			return true, ""
		}
	}
	snapshot := func(n *Node) map[string]string {
		t.Helper()
		out := map[string]string{}
		vals, err := ask(n)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range vals {
			out[keys[i]] = v
		}
		return out
	}
	count := func(m map[string]string, backend string) int {
		c := 0
		for _, v := range m {
			if v == backend {
				c++
			}
		}
		return c
	}
	all := []*Node{a, b, r}
	poll(t, "every node answers from 3 instances", func() (bool, string) {
		seen := map[string]bool{}
		if ok, why := answers(all, func(_, backend string) bool { seen[backend] = true; return true })(); !ok {
			return false, why
		}
		return len(seen) == 3, fmt.Sprintf("answers from %d instances", len(seen))
	})
	before := snapshot(r)
	// Weight 2 owns about twice the keys of weight 1 (shares 1/4, 2/4, 1/4).
	if wa, wb := count(before, "127.0.0.1:9001"), count(before, "127.0.0.1:9002"); wb < 3*wa/2 || wb > 3*wa {
		t.Errorf("weight 1 has %d keys, weight 2 has %d: want about twice", wa, wb)
	}

	// web-c comes back at a new address: every key it had follows it.
	if err := b.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	cb2 := testConfig(t, "b2", logs)
	cb2.Services = map[string][]string{"web": {"127.0.0.2:9003,id=web-c"}}
	cb2.Join = []string{a.GossipAddr()}
	b2 := startNode(t, cb2)
	waitReady(t, b2, "b2")
	all = []*Node{a, b2, r}
	moved := func(key, backend string) bool {
		want := before[key]
		if want == "127.0.0.1:9003" {
			want = "127.0.0.2:9003"
		}
		return backend == want
	}
	poll(t, "web-c's keys at its new address, every other key where it was, on every node", answers(all, moved))

	// A weight changed through the API moves keys to that instance only.
	before = snapshot(r)
	c, err := httpapi.NewClient(a.HTTPAddr(), "")
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.SetWeight(context.Background(), "web", "127.0.0.1:9001", 3)
	if err != nil || res.Instance != "127.0.0.1:9001,id=web-a,weight=3" {
		t.Fatalf("SetWeight: %+v, %v", res, err)
	}
	poll(t, "keys moved to the reweighted instance only, on every node", func() (bool, string) {
		if ok, why := answers(all, func(key, backend string) bool {
			return backend == before[key] || backend == "127.0.0.1:9001"
		})(); !ok {
			return false, why
		}
		after := snapshot(r)
		return count(after, "127.0.0.1:9001") > count(before, "127.0.0.1:9001"), "no key moved to 127.0.0.1:9001 yet"
	})
	rc, err := httpapi.NewClient(r.HTTPAddr(), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.SetWeight(context.Background(), "web", "127.0.0.1:9001", 1); err == nil {
		t.Error("a router-only node changed the weight of another node's instance")
	}
}
