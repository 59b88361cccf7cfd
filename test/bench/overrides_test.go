package main

import (
	"encoding/json"
	"strings"
	"testing"
)

const sampleLookupBench = `pkg: ringman/router
BenchmarkLookupOverrides/overrides=0/miss-2         	 6834271	        80.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=1000/miss-2      	 2074788	        84.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=1000/wildcard-2  	 4162378	       123.3 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=100000/miss-2    	 1238343	       100.0 ns/op	       0 B/op	       1 allocs/op
BenchmarkLookupOverrides/overrides=0/miss-2         	 6834271	        90.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=1000/miss-2      	 2074788	        86.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=1000/wildcard-2  	 4162378	       120.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=100000/miss-2    	 1238343	        90.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=0/miss-2         	 6834271	        70.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=1000/miss-2      	 2074788	        85.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=1000/wildcard-2  	 4162378	       125.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=100000/miss-2    	 1238343	        95.0 ns/op	       0 B/op	       0 allocs/op
PASS
`

func TestMedianBench(t *testing.T) {
	got := medianBench(parseBench([]byte(sampleLookupBench)))
	want := []benchResult{
		{"LookupOverrides/overrides=0/miss", 80, 0},
		{"LookupOverrides/overrides=1000/miss", 85, 0},
		{"LookupOverrides/overrides=1000/wildcard", 123.3, 0},
		{"LookupOverrides/overrides=100000/miss", 95, 1}, // the worst allocs count
	}
	if len(got) != len(want) {
		t.Fatalf("got %d results, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("result %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestLookupRows(t *testing.T) {
	rows := lookupRowsFrom(medianBench(parseBench([]byte(sampleLookupBench))))
	met := map[string]string{}
	for _, r := range rows {
		met[r.measurement] = r.met + " " + r.ratio
	}
	for name, want := range map[string]string{
		"lookup, 0 overrides (ring answers)":                                 "yes ",
		"lookup, 1,000 overrides (1% *.), host without one (ring answers)":   "yes 1.06×", // 85/80: within 1.1×
		"lookup, 100,000 overrides (1% *.), host without one (ring answers)": "NO 1.19×",
		"lookup, 100,000 vs 1,000 overrides, host without one":               "NO 1.12×",
		"lookup, 1,000 overrides, wildcard override hit":                     "yes ",
	} {
		if got, ok := met[name]; !ok {
			t.Errorf("no row %q in %+v", name, rows)
		} else if got != want {
			t.Errorf("row %q: met, ratio = %q, want %q", name, got, want)
		}
	}
	if _, ok := met["lookup, 100,000 overrides, exact override hit"]; ok {
		t.Errorf("a row for a benchmark that did not run")
	}
}

func TestImportBatches(t *testing.T) {
	const limit = 1000
	batches, err := importBatches(100, limit)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i, b := range batches {
		if len(b) > limit {
			t.Errorf("batch %d is %d bytes, over %d", i, len(b), limit)
		}
		var pairs []map[string]string
		if err := json.Unmarshal(b, &pairs); err != nil {
			t.Fatalf("batch %d: %v: %s", i, err, b)
		}
		for _, p := range pairs {
			if p["host"] != importHost(n) || !strings.HasSuffix(p["backend"], ":8080") || len(p) != 2 {
				t.Fatalf("batch %d: entry %d = %v", i, n, p)
			}
			n++
		}
	}
	if n != 100 || len(batches) < 2 {
		t.Errorf("%d entries in %d batches, want 100 in several", n, len(batches))
	}
	if one, _ := importBatches(100, 1<<30); len(one) != 1 {
		t.Errorf("with no limit: %d batches, want 1", len(one))
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 100000: "100,000", 1234567: "1,234,567"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}
