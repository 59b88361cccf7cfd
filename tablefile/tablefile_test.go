package tablefile_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"ringman/hostmap"
	"ringman/ring"
	"ringman/router"
	"ringman/store"
	"ringman/tablefile"
)

// fixture is a real router with real overrides (hostmap on a bbolt file).
type fixture struct {
	r     *router.Router
	table *hostmap.Table
}

func newFixture(t testing.TB) *fixture { return newFixtureWith(t, ring.DefaultSettings()) }

func newFixtureWith(t testing.TB, settings ring.Settings) *fixture {
	t.Helper()
	r, err := router.New(settings, "web")
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	table, err := hostmap.Open(st.DB(), hostmap.Options{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { table.Close() })
	r.SetOverrides(table)
	return &fixture{r: r, table: table}
}

func (f *fixture) update(t testing.TB, instances ...string) {
	t.Helper()
	if _, err := f.r.Update(map[string][]string{"web": instances}); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) set(t testing.TB, pairs ...string) {
	t.Helper()
	var ps []hostmap.Pair
	for i := 0; i < len(pairs); i += 2 {
		ps = append(ps, hostmap.Pair{Host: pairs[i], Backend: pairs[i+1]})
	}
	if _, err := f.table.SetMany(ps); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) encode(t testing.TB) (*router.Export, []byte) {
	t.Helper()
	e, err := f.r.Export("web")
	if err != nil {
		t.Fatal(err)
	}
	buf, err := tablefile.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return e, buf
}

// testOverrides are the overrides of the nginx tests (test/nginx), and a few
// more wildcard depths.
var testOverrides = []string{
	"exact.example.com", "10.9.0.1:1",
	"*.example.com", "10.9.0.2:2",
	"*.b.example.com", "10.9.0.3:3",
	"plain.org", "10.9.0.4:4",
	"*.deep.x.y.z.org", "10.9.0.5:5",
	"*.l.example.com", "[::1]:6",
	// 63 and 64 labels after the "*.": both are wild_depths' bit 63.
	"*." + strings.Repeat("a.", 62) + "com", "10.9.0.7:7",
	"*." + strings.Repeat("b.", 63) + "com", "10.9.0.8:8",
}

// testKeys are the keys of test/nginx's TestLuaTableMatchesRingman (upper
// case, ports, trailing dots, NUL, CRLF, 3 kB paths, hosts over 253 bytes)
// and 3,000 ordinary ones.
func testKeys() []string {
	keys := []string{"", "/", "a", "Exact.Example.COM:8080/x", "exact.example.com./y", "exact.example.com.", "x.y.example.com/z",
		"deep.a.b.example.com", "A.B.EXAMPLE.COM/q", "example.com/q", "/exact.example.com", "plain.org", "plain.org:443",
		"sub.plain.org/x", "q.deep.x.y.z.org/1", "deep.x.y.z.org/1", strings.Repeat("a", 300) + ".example.com/x",
		strings.Repeat("a", 241) + ".example.com/x", strings.Repeat("a", 242) + ".example.com/x",
		"host with space.example.com/x", "crlf\r\n.example.com/x", "nul\x00.example.com/x", ".example.com/x",
		"*.example.com/x", "exact.example.com:/x", "ünïcode.example.com/x", "site.test/%00/x", "site.test/" + strings.Repeat("p", 3000),
		"a..example.com/x", "..", ".", "x.", "EXACT.EXAMPLE.COM", "crlf\r\nhost/x", "nul\x00/x", "PLAIN.ORG.:80/x",
		"a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g.h.i.j.k.l.example.com/x"}
	for _, rest := range []string{strings.Repeat("a.", 62) + "com", strings.Repeat("b.", 63) + "com", strings.Repeat("b.", 62) + "com"} {
		keys = append(keys, "x."+rest+"/p", "X.Y."+strings.ToUpper(rest)+".:1/p", rest, "*."+rest)
	}
	for i := range 1500 {
		keys = append(keys, fmt.Sprintf("h%d.example.org/item/%d", i%17, i), fmt.Sprintf("/item/%d", i))
	}
	return keys
}

func sameExport(a, b *router.Export) string {
	switch {
	case a.Epoch != b.Epoch:
		return fmt.Sprintf("epoch %x, want %x", a.Epoch, b.Epoch)
	case a.Hash != b.Hash || a.Partitions != b.Partitions || a.Width != b.Width:
		return fmt.Sprintf("%s %d×%d, want %s %d×%d", a.Hash, a.Partitions, a.Width, b.Hash, b.Partitions, b.Width)
	case !slices.Equal(a.Instances, b.Instances):
		return fmt.Sprintf("instances %q, want %q", a.Instances, b.Instances)
	case !slices.Equal(a.Table, b.Table):
		return "the rows differ"
	case !slices.Equal(a.OverrideHosts, b.OverrideHosts) || !slices.Equal(a.OverrideBackends, b.OverrideBackends):
		return fmt.Sprintf("overrides %q -> %q, want %q -> %q", a.OverrideHosts, a.OverrideBackends, b.OverrideHosts, b.OverrideBackends)
	}
	return ""
}

// TestRoundTripAndLookup encodes a real router's export in several states,
// decodes it, and checks that the file holds the export and answers every
// test key, for 1, 3 and 8 candidates, exactly as router.Candidates does.
func TestRoundTripAndLookup(t *testing.T) {
	f := newFixture(t)
	keys := testKeys()
	check := func(stage string) {
		t.Helper()
		e, buf := f.encode(t)
		tb, err := tablefile.Decode(buf)
		if err != nil {
			t.Fatalf("%s: decode what Encode wrote: %v", stage, err)
		}
		if why := sameExport(tb.Export(), e); why != "" {
			t.Fatalf("%s: decoded export: %s", stage, why)
		}
		again, _ := tablefile.Encode(e)
		if !slices.Equal(again, buf) {
			t.Fatalf("%s: two encodings of one export differ", stage)
		}
		for _, key := range keys {
			for _, n := range []int{0, 1, 3, 8} {
				want, wsrc := f.r.Candidates("web", []byte(key), n)
				got, src := tb.Lookup([]byte(key), n)
				if !slices.Equal(got, want) || src != wsrc {
					t.Fatalf("%s: key %q, n=%d: the file answers %q (%v), the router %q (%v)", stage, key, n, got, src, want, wsrc)
				}
			}
		}
	}
	check("no instances, no overrides")
	f.update(t, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
	check("three instances")
	f.set(t, testOverrides...)
	check("three instances and overrides")
	var many []string
	for i := range 20 {
		many = append(many, fmt.Sprintf("10.1.%d.%d:8080", i/250, i%250))
	}
	f.update(t, many...)
	check("twenty instances (width 8) and overrides")
	f.update(t)
	check("no instance, overrides only")
}
