package hostmap

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"

	"ringman/store"
)

// Match is benchmarked here alone; router's BenchmarkLookupOverrides measures
// it in front of a ring, as every lookup path calls it.

const benchKeyMask = 1<<12 - 1 // key pools are powers of two: the loop masks its counter

var benchSink atomic.Int64

// benchTable opens a table on a bbolt file in a temp dir, closed with b.
func benchTable(b *testing.B, node string) *Table {
	b.Helper()
	st, err := store.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	tb, err := Open(st.DB(), Options{Node: node})
	if err != nil {
		st.Close()
		b.Fatal(err)
	}
	b.Cleanup(func() { tb.Close(); st.Close() })
	return tb
}

// benchPairs returns n overrides of hosts site<i>.example.com; with
// wildcardEvery > 0, every wildcardEvery-th is *.tenant<i>.example.net instead.
func benchPairs(n, wildcardEvery int) []Pair {
	pairs := make([]Pair, n)
	for i := range pairs {
		host := "site" + strconv.Itoa(i) + ".example.com"
		if wildcardEvery > 0 && i%wildcardEvery == 0 {
			host = "*.tenant" + strconv.Itoa(i) + ".example.net"
		}
		pairs[i] = Pair{Host: host, Backend: "10.1." + strconv.Itoa(i/250%250) + "." + strconv.Itoa(i%250+1) + ":8080"}
	}
	return pairs
}

// BenchmarkMatch is a lookup whose host has no override (the common case),
// in tables of 1,000 and 100,000 overrides without any wildcard (one map
// probe) and with 1% wildcards (the exact probe, then one per dot of the
// host: four for www.shop<i>.example.org), and one that hits an exact entry.
func BenchmarkMatch(b *testing.B) {
	miss := make([][]byte, benchKeyMask+1)
	for i := range miss {
		miss[i] = []byte("www.shop" + strconv.Itoa(i*7919) + ".example.org/videos/" + strconv.Itoa(i) + ".ts")
	}
	for _, size := range []int{1_000, 100_000} {
		for _, shape := range []struct {
			name          string
			wildcardEvery int
		}{{"exact-only", 0}, {"1pct-wildcards", 100}} {
			b.Run(fmt.Sprintf("overrides=%d/%s", size, shape.name), func(b *testing.B) {
				tb := benchTable(b, "bench")
				if _, err := tb.SetMany(benchPairs(size, shape.wildcardEvery)); err != nil {
					b.Fatal(err)
				}
				hit := make([][]byte, benchKeyMask+1)
				for i := range hit {
					j := i * 7919 % size
					if shape.wildcardEvery > 0 && j%shape.wildcardEvery == 0 {
						j++
					}
					hit[i] = []byte("site" + strconv.Itoa(j) + ".example.com/videos/" + strconv.Itoa(i) + ".ts")
				}
				for _, v := range []struct {
					name string
					keys [][]byte
					want bool
				}{{"miss", miss, false}, {"hit", hit, true}} {
					for _, k := range v.keys {
						if got := tb.Match(k) != nil; got != v.want {
							b.Fatalf("Match(%s) found = %v, want %v", k, got, v.want)
						}
					}
					b.Run(v.name, func(b *testing.B) {
						b.ReportAllocs()
						total, i := 0, 0
						for b.Loop() {
							total += len(tb.Match(v.keys[i&benchKeyMask]))
							i++
						}
						benchSink.Add(int64(total))
					})
				}
			})
		}
	}
}

// BenchmarkSetMany100k is the in-process part of a bulk import: 100,000
// overrides validated, committed in one bbolt transaction (fsynced) and
// published, into an empty table each time.
func BenchmarkSetMany100k(b *testing.B) {
	pairs := benchPairs(100_000, 100)
	for b.Loop() {
		b.StopTimer()
		tb := benchTable(b, "bench")
		b.StartTimer()
		if _, err := tb.SetMany(pairs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMergeState100k is what a fresh node does with a peer's full state
// of 100,000 overrides after joining: decode and validate it, merge it into
// its empty table in one commit. The state's size is reported as
// state-bytes (before memberlist's compression).
func BenchmarkMergeState100k(b *testing.B) {
	src := benchTable(b, "seed")
	if _, err := src.SetMany(benchPairs(100_000, 100)); err != nil {
		b.Fatal(err)
	}
	state := src.LocalState()
	for b.Loop() {
		b.StopTimer()
		tb := benchTable(b, "fresh")
		b.StartTimer()
		entries, err := decodeEntries(state)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := tb.Merge(entries); err != nil || n != 100_000 {
			b.Fatalf("Merge = %d, %v; want 100000 changes", n, err)
		}
	}
	b.ReportMetric(float64(len(state)), "state-bytes")
}

// BenchmarkSetOne is one override write (validated, committed in its own
// fsynced bbolt transaction, published) into a table that already holds
// 1,000 or 100,000 overrides: it should cost the same at both sizes.
func BenchmarkSetOne(b *testing.B) {
	for _, size := range []int{1_000, 100_000} {
		b.Run(fmt.Sprint("overrides=", size), func(b *testing.B) {
			tb := benchTable(b, "bench")
			if _, err := tb.SetMany(benchPairs(size, 100)); err != nil {
				b.Fatal(err)
			}
			i := 0
			for b.Loop() {
				if _, err := tb.Set("w"+strconv.Itoa(i)+".write.example.com", "10.9.0.1:80"); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
