package tablec

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"

	"ringman/router"
	"ringman/tablefile"
)

// export returns a table's worth of state drawn from rng: instances,
// rows, and overrides with exact hosts and wildcards of several depths.
func export(rng *rand.Rand, instances, partitions, width, overrides int) *router.Export {
	e := &router.Export{Hash: "xxhash64", Partitions: partitions, Width: width}
	for i := range instances {
		e.Instances = append(e.Instances, fmt.Sprintf("10.0.%d.%d:%d", i/250, i%250+1, 8000+i))
	}
	slices.Sort(e.Instances)
	for range partitions * width {
		e.Table = append(e.Table, uint32(rng.IntN(instances)))
	}
	labels := []string{"a", "b", "example", "com", "x", "deep"}
	seen := map[string]bool{}
	for len(e.OverrideHosts) < overrides {
		var parts []string
		for range 1 + rng.IntN(4) {
			parts = append(parts, labels[rng.IntN(len(labels))])
		}
		h := strings.Join(parts, ".")
		if rng.IntN(3) == 0 {
			h = "*." + h
		}
		if seen[h] {
			continue
		}
		seen[h] = true
		e.OverrideHosts = append(e.OverrideHosts, h)
		e.OverrideBackends = append(e.OverrideBackends, fmt.Sprintf("192.168.0.%d:80", len(e.OverrideHosts)))
	}
	return e
}

func encode(t testing.TB, e *router.Export) []byte {
	t.Helper()
	buf, err := tablefile.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return buf
}

// keys are lookups that reach overrides, wildcards and rows.
func keys(rng *rand.Rand) [][]byte {
	out := [][]byte{nil, []byte("/"), []byte("."), []byte(":"), []byte("A.EXAMPLE.COM:80/x"), []byte("x.a.b./"),
		[]byte(strings.Repeat("a.", 126) + "a./x"), []byte(strings.Repeat("a.", 127) + "/x")}
	labels := []string{"a", "b", "example", "com", "x", "deep", "A", "Com", ""}
	for i := range 2000 {
		var parts []string
		for range 1 + rng.IntN(6) {
			parts = append(parts, labels[rng.IntN(len(labels))])
		}
		k := strings.Join(parts, ".")
		switch i % 4 {
		case 0:
			k += "/p/" + fmt.Sprint(i)
		case 1:
			k += ".:8080/q"
		case 2:
			k = "/" + k
		}
		out = append(out, []byte(k))
	}
	return out
}

// check compares the C reader with tablefile on buf: both accept it or
// both refuse it, and an accepted table answers every key the same.
func check(t testing.TB, buf []byte, ks [][]byte) {
	t.Helper()
	gt, gerr := tablefile.Decode(buf)
	ct, cerr := Open(buf)
	if (gerr == nil) != (cerr == nil) {
		t.Fatalf("Go decoder: %v; C reader: %v", gerr, cerr)
	}
	if cerr != nil {
		return
	}
	defer ct.Close()
	for _, k := range ks {
		kind, got := ct.Lookup(k)
		want, src := gt.Lookup(k, tablefile.MaxWidth)
		if !slices.Equal(got, want) || (kind == "override") != (src == router.Override) {
			t.Fatalf("key %q: C answers %s %q, Go %s %q", k, kind, got, src, want)
		}
	}
}

func TestMatchesTablefile(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ks := keys(rng)
	for _, c := range []struct{ n, p, w, o int }{{0, 0, 0, 0}, {0, 0, 0, 5}, {1, 1, 1, 0}, {3, 271, 3, 0},
		{3, 271, 3, 40}, {50, 7919, 3, 200}, {9, 13, 8, 1}} {
		check(t, encode(t, export(rng, c.n, c.p, c.w, c.o)), ks)
	}
}

// Every byte of a small table flipped (checksum fixed up, so that the
// checks behind it run too): the C reader refuses what Go refuses, and
// answers what both accept alike. No input may crash it.
func TestCorruptions(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	ks := keys(rng)[:200]
	good := encode(t, export(rng, 3, 7, 2, 6))
	for i := range good {
		for _, bit := range []byte{0x01, 0x80, 0xff} {
			buf := slices.Clone(good)
			buf[i] ^= bit
			if i >= 40 || i < 32 {
				fixChecksum(buf)
			}
			check(t, buf, ks)
		}
	}
	for n := range good {
		check(t, good[:n], nil)
	}
}

func fixChecksum(buf []byte) {
	if len(buf) >= 40 {
		binary.LittleEndian.PutUint64(buf[32:], xxhash.Sum64(buf[40:]))
	}
}

// FuzzOpen: any bytes, checksum fixed up, against the Go decoder.
func FuzzOpen(f *testing.F) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range []struct{ n, p, w, o int }{{0, 0, 0, 0}, {0, 0, 0, 2}, {2, 3, 2, 3}, {3, 5, 1, 1}} {
		f.Add(encode(f, export(rng, c.n, c.p, c.w, c.o)))
	}
	ks := keys(rng)[:100]
	f.Fuzz(func(t *testing.T, buf []byte) {
		fixChecksum(buf)
		check(t, buf, ks)
	})
}

// FuzzLookup: any key against a table with overrides and wildcards.
func FuzzLookup(f *testing.F) {
	rng := rand.New(rand.NewPCG(7, 8))
	buf := encode(f, export(rng, 5, 31, 3, 30))
	for _, k := range keys(rng)[:50] {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key []byte) {
		check(t, buf, [][]byte{key})
	})
}
