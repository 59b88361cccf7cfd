package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

const sampleLookupBench = `pkg: ringman/router
BenchmarkLookupOverrides/overrides=0/miss-2         	 6834271	        80.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=1000/miss-2      	 2074788	        84.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=1000/wildcard-2  	 4162378	       123.3 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=100000/miss-2    	 1238343	       130.0 ns/op	       0 B/op	       1 allocs/op
BenchmarkLookupOverrides/overrides=0/miss-2         	 6834271	        90.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=1000/miss-2      	 2074788	        86.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=1000/wildcard-2  	 4162378	       120.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=100000/miss-2    	 1238343	       120.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=0/miss-2         	 6834271	        70.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=1000/miss-2      	 2074788	        85.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=1000/wildcard-2  	 4162378	       125.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupOverrides/overrides=100000/miss-2    	 1238343	       125.0 ns/op	       0 B/op	       0 allocs/op
PASS
`

func TestMedianBench(t *testing.T) {
	got := medianBench(parseBench([]byte(sampleLookupBench)))
	want := []benchResult{
		{"LookupOverrides/overrides=0/miss", 80, 0},
		{"LookupOverrides/overrides=1000/miss", 85, 0},
		{"LookupOverrides/overrides=1000/wildcard", 123.3, 0},
		{"LookupOverrides/overrides=100000/miss", 125, 1}, // the worst allocs count
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
		"lookup, 1,000 overrides (1% *.), host without one (ring answers)":   "yes 1.06×", // 85/80: within 1.5×
		"lookup, 100,000 overrides (1% *.), host without one (ring answers)": "NO 1.56×",
		"lookup, 100,000 vs 1,000 overrides, host without one":               "NO 1.47×", // over 1.1×
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

func TestWriteRows(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * 1e6) }
	single := map[int]writeCost{1_000: {wall: ms(1), writerCPU: ms(0.5)}, 100_000: {wall: ms(1.5), writerCPU: ms(1.1)}}
	pair := map[int]writeCost{1_000: {wall: ms(1), writerCPU: ms(0.5), receiverCPU: ms(0.2)}, 100_000: {wall: ms(1.9), writerCPU: ms(0.9), receiverCPU: ms(0.3)}}
	rows := writeRowsFrom(single, pair, respLatency{p99: ms(1.2), max: ms(3)}, respLatency{p99: ms(0.1), max: ms(0.2)})
	met := map[string]string{}
	for _, r := range rows {
		met[r.measurement] = r.met + " " + r.ratio
	}
	for name, want := range map[string]string{
		"override write (1 node) at 1,000 entries: wall, CPU":            "- ",
		"override write (1 node) at 100,000 entries: wall, CPU":          "NO 1.50×, 2.20×", // CPU over 2×
		"override write (2 nodes, writer) at 100,000 entries: wall, CPU": "yes 1.90×, 1.80×",
		"2-node receiver CPU per write at 100,000 entries":               "yes 1.50×",
		"RESP GET p99 during 10 writes/s at 100,000 entries":             "NO ",
	} {
		if got, ok := met[name]; !ok {
			t.Errorf("no row %q in %+v", name, rows)
		} else if got != want {
			t.Errorf("row %q: met, ratio = %q, want %q", name, got, want)
		}
	}
}

func TestPercentile(t *testing.T) {
	xs := make([]float64, 0, 200)
	for i := 200; i > 0; i-- {
		xs = append(xs, float64(i))
	}
	if got := percentile(xs, 0.99); got != 199 {
		t.Errorf("p99 of 1..200 = %v, want 199", got)
	}
	if got := percentile(nil, 0.99); got != 0 {
		t.Errorf("p99 of nothing = %v, want 0", got)
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
