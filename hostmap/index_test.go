package hostmap

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestIndexIncrementalMatchesRebuild drives a table through random sets
// and deletes of exact and wildcard hosts, and after each step checks that
// the index published shard by shard is the one a full rebuild gives, and
// that Match answers what the live entries say.
func TestIndexIncrementalMatchesRebuild(t *testing.T) {
	tb, _ := openTable(t, "n1", nil)
	rng := rand.New(rand.NewPCG(1, 2))
	hosts := make([]string, 0, 60)
	for i := range 30 {
		hosts = append(hosts, fmt.Sprintf("h%d.example.com", i), fmt.Sprintf("*.w%d.example.%s", i, []string{"com", "net", "a.b", "c"}[i%4]))
	}
	hosts = append(hosts, "*.io", "*.q1.io") // no tail: the tail filter is bypassed while they live
	for step := range 400 {
		h := hosts[rng.IntN(len(hosts))]
		if rng.IntN(3) == 0 {
			if _, err := tb.Delete(h); err != nil && err != ErrNotFound {
				t.Fatal(err)
			}
		} else if _, err := tb.SetMany([]Pair{{h, fmt.Sprintf("10.0.0.%d:80", step%250+1)}, {hosts[rng.IntN(len(hosts))], "10.0.1.1:80"}}); err != nil {
			t.Fatal(err)
		}
		got := tb.index.Load()
		tb.mu.Lock()
		counts := tb.wildCounts
		tb.publishLocked(nil)
		want := tb.index.Load()
		rebuilt := tb.wildCounts
		tb.mu.Unlock()
		if got.count != want.count || got.wildDepths != want.wildDepths || counts != rebuilt ||
			got.tails != want.tails || got.wildShort != want.wildShort {
			t.Fatalf("step %d: count %d, wildDepths %b; a rebuild has %d, %b", step, got.count, got.wildDepths, want.count, want.wildDepths)
		}
		for s := range got.backends {
			g, w := got.backends[s], want.backends[s]
			if got.words[s] != want.words[s] || !slices.Equal(got.big[s], want.big[s]) || len(g) != len(w) {
				t.Fatalf("step %d: shard %d differs from a rebuild: %v vs %v", step, s, g, w)
			}
			for h, b := range w {
				if gb := g[h]; len(gb) != 1 || gb[0] != b[0] {
					t.Fatalf("step %d: shard %d has %s -> %v, a rebuild %v", step, s, h, gb, b)
				}
			}
		}
		for _, e := range tb.List() {
			key := e.Host
			if key[0] == '*' {
				key = "X.y" + key[1:]
			}
			if b := tb.Match([]byte(key + ":8080/p")); len(b) != 1 || b[0] != e.Backend {
				t.Fatalf("step %d: Match(%s) = %v, want %s", step, key, b, e.Backend)
			}
		}
	}
}

// FuzzHostLen checks hostLen, dotsOf and dotsLow, the word-at-a-time scans Match
// uses, against hostOf and a byte-by-byte search for the dots.
func FuzzHostLen(f *testing.F) {
	for _, k := range []string{"", "/", "a", "a.", "a.b.c/d", ".x:1/y", "www.shop1.example.org/videos/1.ts",
		"Q.B.Example.COM:8080/p?x=1", "a..b.", "..", strings.Repeat("a.", 126) + "b/", strings.Repeat("x", 253) + "./",
		strings.Repeat("x", 254), strings.Repeat("a.b", 90)} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		n := hostLen([]byte(key))
		host := hostOf([]byte(key))
		want := len(host)
		if want > MaxHostLen {
			want = -1
		}
		if n != want {
			t.Fatalf("hostLen(%q) = %d, hostOf %d bytes (%q)", key, n, want, host)
		}
		if len(host) > MaxHostLen {
			return
		}
		var dots [4]uint64
		for i, c := range host {
			if c == '.' {
				dots[i>>6] |= 1 << (i & 63)
			}
		}
		if got := dotsOf(host); got != dots {
			t.Fatalf("dotsOf(%q) = %x, want %x", host, got, dots)
		}
		if len(host) >= 8 && len(host) <= 64 {
			if got := dotsLow(host); got != dots[0] {
				t.Fatalf("dotsLow(%q) = %x, want %x", host, got, dots[0])
			}
		}
	})
}

// hostOf, the reference for hostLen, returns the host part of a lookup key
// (README: How it decides): the text before the first '/' when the key
// does not start with '/', without a ":port"
// suffix and without one trailing dot (a Host header may be the absolute
// "example.com."; NormalizeHost stores hosts without it). It is not
// lower-cased.
func hostOf(key []byte) []byte {
	if len(key) == 0 || key[0] == '/' {
		return nil
	}
	if i := bytes.IndexByte(key, '/'); i >= 0 {
		key = key[:i]
	}
	if i := bytes.IndexByte(key, ':'); i >= 0 {
		key = key[:i]
	}
	if n := len(key); n > 0 && key[n-1] == '.' {
		key = key[:n-1]
	}
	return key
}
