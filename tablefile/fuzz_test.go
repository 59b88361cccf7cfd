package tablefile_test

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"ringman/ring"
	"ringman/tablefile"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz/FuzzDecode from the fixtures")

// seedFiles are valid files of the shapes that matter: no instance, no
// override; instances and overrides; overrides only.
func seedFiles(t testing.TB) map[string][]byte {
	// Few partitions: the fuzzer mutates small inputs much faster.
	f := newFixtureWith(t, ring.Settings{Partitions: 13, Load: ring.DefaultLoad, ReplicationFactor: 16})
	out := map[string][]byte{}
	_, out["empty"] = f.encode(t)
	f.update(t, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
	_, out["ring"] = f.encode(t)
	f.set(t, testOverrides...)
	_, out["ring-overrides"] = f.encode(t)
	f.update(t)
	_, out["overrides"] = f.encode(t)
	return out
}

// TestFuzzSeedsAreCurrent keeps the committed seed corpus valid: a change
// of the layout must regenerate it (go test -run TestFuzzSeedsAreCurrent
// -update-seeds ./tablefile/), or the fuzzer would start from refused files.
func TestFuzzSeedsAreCurrent(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	for name, buf := range seedFiles(t) {
		path := filepath.Join(dir, name)
		if *updateSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(buf)) + ")\n"
			if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		body, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("seed %s: %v (regenerate with -update-seeds)", name, err)
		}
		lit := string(body[len("go test fuzz v1\n[]byte(") : len(body)-len(")\n")])
		seed, err := strconv.Unquote(lit)
		if err != nil {
			t.Fatalf("seed %s: %v", name, err)
		}
		if _, err := tablefile.Decode([]byte(seed)); err != nil {
			t.Errorf("seed %s is refused (regenerate with -update-seeds): %v", name, err)
		}
	}
}

// FuzzDecode checks that Decode never panics, and that whatever it accepts
// answers lookups and exports without panicking. Each input is also tried
// with its file size and checksum fixed, or nearly every mutation would
// stop at the checksum and the structural checks would go unexplored.
func FuzzDecode(f *testing.F) {
	for _, buf := range seedFiles(f) {
		f.Add(buf)
	}
	keys := [][]byte{nil, []byte("/"), []byte("exact.example.com/x"), []byte("A.B.EXAMPLE.COM:80/q"), []byte("x.deep.x.y.z.org."),
		[]byte("plain.org"), []byte("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g.h.i.j.k.l.com")}
	f.Fuzz(func(t *testing.T, buf []byte) {
		try := func(b []byte) {
			tb, err := tablefile.Decode(b)
			if err != nil {
				return
			}
			for _, key := range append(keys, b[:min(len(b), 300)]) {
				got, _ := tb.Lookup(key, 8)
				if len(got) > 8 {
					t.Fatalf("%d candidates", len(got))
				}
			}
			// Whatever Encode makes of an accepted file, Decode accepts. (Its
			// answers may differ: a crafted file can hold a slot that no
			// probe reaches, which Encode would place where one does.)
			if again, err := tablefile.Encode(tb.Export()); err == nil {
				if _, err := tablefile.Decode(again); err != nil {
					t.Fatalf("re-encoded file refused: %v", err)
				}
			}
		}
		try(buf)
		if len(buf) >= tablefile.HeaderSize {
			fixed := slices.Clone(buf)
			reseal(fixSize(fixed))
			try(fixed)
		}
	})
}

func fixSize(b []byte) []byte {
	le.PutUint64(b[hFileSize:], uint64(len(b)))
	return b
}
