package router_test

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"

	"ringman/hostmap"
	"ringman/ring"
	"ringman/router"
	"ringman/store"
)

// Override-table sizes of BenchmarkLookupOverrides (lookups must
// cost the same with 0, 1,000 and 100,000 overrides).
var overrideBenchSizes = []int{0, 1_000, 100_000}

// overrideBenchWildcardEvery makes one override in this many a "*." one, so
// that a lookup that misses the exact host also walks its wildcards, as it
// does in any table that has at least one wildcard.
const overrideBenchWildcardEvery = 100

// The lookup keys come from pools built before the timer starts; the pool
// size is a power of two so the loop masks its counter.
const overrideBenchKeyMask = 1<<12 - 1

var overrideBenchSink atomic.Int64

// overrideBenchPairs returns n overrides: exact hosts site<i>.example.com,
// and every overrideBenchWildcardEvery-th one a wildcard *.tenant<i>.example.net.
func overrideBenchPairs(n int) []hostmap.Pair {
	pairs := make([]hostmap.Pair, n)
	for i := range pairs {
		host := "site" + strconv.Itoa(i) + ".example.com"
		if i%overrideBenchWildcardEvery == 0 {
			host = "*.tenant" + strconv.Itoa(i) + ".example.net"
		}
		pairs[i] = hostmap.Pair{Host: host, Backend: "10.1." + strconv.Itoa(i/250%250) + "." + strconv.Itoa(i%250+1) + ":8080"}
	}
	return pairs
}

// overrideBenchKeys returns the key pool of a variant: URL-like keys
// "host/path" whose host has no override ("miss": the ring answers), is
// covered by a wildcard override ("wildcard"), or has an exact one ("exact").
func overrideBenchKeys(variant string, n int) [][]byte {
	out := make([][]byte, overrideBenchKeyMask+1)
	for i := range out {
		path := "/videos/" + strconv.Itoa(i*7919) + "/segment-42.ts"
		var host string
		switch variant {
		case "miss":
			// Three dots: with wildcards in the table, the exact host and
			// three wildcards are tried before the ring answers.
			host = "www.shop" + strconv.Itoa(i*7919) + ".example.org"
		case "wildcard":
			j := (i * 7919 % n) / overrideBenchWildcardEvery * overrideBenchWildcardEvery
			host = "img.tenant" + strconv.Itoa(j) + ".example.net"
		case "exact":
			j := i * 7919 % n
			if j%overrideBenchWildcardEvery == 0 {
				j++
			}
			host = "site" + strconv.Itoa(j) + ".example.com"
		}
		out[i] = []byte(host + path)
	}
	return out
}

// BenchmarkLookupOverrides is Router.Lookup, the function every lookup path
// calls, with a real hostmap.Table (bbolt file in a temp dir) of 0, 1,000
// and 100,000 overrides in front of a 100-instance ring. "miss" is the
// common case: the key's host has no override and the ring answers;
// "wildcard" and "exact" hit an override. Setup (a bulk SetMany of all the
// overrides, one commit) is outside the timer.
func BenchmarkLookupOverrides(b *testing.B) {
	for _, size := range overrideBenchSizes {
		b.Run(fmt.Sprint("overrides=", size), func(b *testing.B) {
			r, err := router.New(ring.DefaultSettings(), "web")
			if err != nil {
				b.Fatal(err)
			}
			if _, err := r.Update(map[string][]string{"web": names("web", 100)}); err != nil {
				b.Fatal(err)
			}
			st, err := store.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			table, err := hostmap.Open(st.DB(), hostmap.Options{Node: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			defer table.Close()
			if size > 0 {
				if _, err := table.SetMany(overrideBenchPairs(size)); err != nil {
					b.Fatal(err)
				}
			}
			if table.Len() != size {
				b.Fatalf("table has %d overrides, want %d", table.Len(), size)
			}
			r.SetOverrides(table)

			variants := []struct {
				name string
				want router.Source
			}{{"miss", router.Ring}, {"wildcard", router.Override}, {"exact", router.Override}}
			for _, v := range variants {
				if size == 0 && v.want == router.Override {
					continue // nothing to hit
				}
				keys := overrideBenchKeys(v.name, size)
				for _, k := range keys {
					if _, src := r.Lookup("", k); src != v.want {
						b.Fatalf("Lookup(%s) answered from %v, want %v", k, src, v.want)
					}
				}
				b.Run(v.name, func(b *testing.B) {
					b.ReportAllocs()
					total, i := 0, 0
					for b.Loop() {
						s, _ := r.Lookup("", keys[i&overrideBenchKeyMask])
						total += len(s)
						i++
					}
					overrideBenchSink.Add(int64(total))
				})
			}
		})
	}
}
