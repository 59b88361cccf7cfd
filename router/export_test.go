package router_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"

	"ringman/hostmap"
	"ringman/ring"
	"ringman/router"
	"ringman/store"
)

// exportCandidates answers from an Export alone, by the rules its doc gives
// (and nginx/ringman.lua follows): the key's host part, lower-cased, without
// :port and one trailing dot; the exact override, then the nearest "*."
// wildcard; else the key's row of the table.
func exportCandidates(e *router.Export, key string, n int) []string {
	if host, _, _ := strings.Cut(key, "/"); key != "" && key[0] != '/' {
		host, _, _ = strings.Cut(host, ":")
		host = strings.ToLower(strings.TrimSuffix(host, "."))
		if host != "" && len(host) <= 253 {
			probe := []string{host}
			for i := 1; i < len(host); i++ {
				if host[i] == '.' {
					probe = append(probe, "*"+host[i:])
				}
			}
			for _, h := range probe {
				if i, ok := slices.BinarySearch(e.OverrideHosts, h); ok {
					return []string{e.OverrideBackends[i]}
				}
			}
		}
	}
	if e.Width == 0 || n <= 0 {
		return nil
	}
	p := int(xxhash.Sum64String(key) % uint64(e.Partitions))
	var out []string
	for _, idx := range e.Table[p*e.Width : p*e.Width+min(n, e.Width)] {
		out = append(out, e.Instances[idx])
	}
	return out
}

func TestExportAnswersLikeCandidates(t *testing.T) {
	r, err := router.New(ring.DefaultSettings(), "web")
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	table, err := hostmap.Open(st.DB(), hostmap.Options{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	defer table.Close()
	r.SetOverrides(table)

	keys := []string{"/", "", "a", "Exact.Example.com:8080/x", "exact.example.com./y", "x.y.example.com/z",
		"deep.a.b.example.com", "example.com/q", "/exact.example.com", "EXACT.EXAMPLE.COM", "sub.plain.org/x",
		strings.Repeat("a", 300) + ".example.com/x", "host with space/x", "crlf\r\nhost/x", "nul\x00/x"}
	for i := range 2000 {
		keys = append(keys, fmt.Sprintf("h%d.example.org/item/%d", i%13, i), fmt.Sprintf("/item/%d", i))
	}
	check := func(stage string) *router.Export {
		t.Helper()
		e, err := r.Export("")
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range keys {
			for _, n := range []int{1, 3, 8} {
				want, _ := r.Candidates("web", []byte(key), n)
				if got := exportCandidates(e, key, n); !slices.Equal(got, want) {
					t.Fatalf("%s: key %q, n=%d: export answers %q, Candidates %q", stage, key, n, got, want)
				}
			}
		}
		return e
	}

	empty := check("no instances, no overrides")
	if _, err := r.Update(map[string][]string{"web": {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}}); err != nil {
		t.Fatal(err)
	}
	three := check("three instances")
	if again, _ := r.Export("web"); again != three {
		t.Fatal("a second Export without a change built a new one; want the cached one")
	}
	if _, err := table.SetMany([]hostmap.Pair{{Host: "exact.example.com", Backend: "10.9.0.1:1"},
		{Host: "*.example.com", Backend: "10.9.0.2:2"}, {Host: "*.b.example.com", Backend: "10.9.0.3:3"},
		{Host: "plain.org", Backend: "10.9.0.4:4"}}); err != nil {
		t.Fatal(err)
	}
	withOverrides := check("three instances and overrides")
	if _, err := r.Update(map[string][]string{"web": {"10.0.0.1:80", "10.0.0.3:80"}}); err != nil {
		t.Fatal(err)
	}
	two := check("two instances and overrides")

	epochs := map[uint64]string{}
	for name, e := range map[string]*router.Export{"empty": empty, "three": three, "overrides": withOverrides, "two": two} {
		if other, dup := epochs[e.Epoch]; dup {
			t.Fatalf("exports %s and %s share epoch %x", name, other, e.Epoch)
		}
		epochs[e.Epoch] = name
	}

	// Another router with the same live set and overrides exports the same
	// epoch, whatever order it learnt them in.
	r2, _ := router.New(ring.DefaultSettings(), "web")
	r2.SetOverrides(table)
	r2.Update(map[string][]string{"web": {"10.0.0.3:80", "10.0.0.1:80"}})
	if e2, _ := r2.Export("web"); e2.Epoch != two.Epoch {
		t.Fatalf("same rings and overrides, epochs %x and %x", e2.Epoch, two.Epoch)
	}
	if u, _ := r.Export("no-such-service"); u.Width != 0 || len(u.OverrideHosts) != 4 {
		t.Fatalf("unknown service exports width %d and %d overrides, want 0 and 4", u.Width, len(u.OverrideHosts))
	}
}
