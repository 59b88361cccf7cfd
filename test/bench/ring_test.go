package main

import (
	"testing"
)

const sampleBench = `goos: linux
goarch: amd64
pkg: ringman/ring
cpu: AMD EPYC
BenchmarkOwner/instances=10-2         	50000000	        23.40 ns/op	       0 B/op	       0 allocs/op
BenchmarkOwner/instances=1000-2       	40000000	        30.50 ns/op	       0 B/op	       0 allocs/op
BenchmarkOwnerParallel/instances=10-2 	30000000	        38.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkRebuild/instances=1000-2     	      50	  20450000 ns/op	   12345 B/op	     250 allocs/op
BenchmarkConsistentLocateKey/instances=10-2         	20000000	        67.30 ns/op
BenchmarkConsistentLocateKey/instances=1000-2       	20000000	        82.40 ns/op	 1.5 extra/op
BenchmarkRebuild/fromscratch 	  3	 400000000 ns/op
PASS
ok  	ringman/ring	12.3s
`

func TestParseBench(t *testing.T) {
	got := parseBench([]byte(sampleBench))
	want := []benchResult{
		{"Owner/instances=10", 23.4, 0},
		{"Owner/instances=1000", 30.5, 0},
		{"OwnerParallel/instances=10", 38, 0},
		{"Rebuild/instances=1000", 20.45e6, 250},
		{"ConsistentLocateKey/instances=10", 67.3, -1},
		{"ConsistentLocateKey/instances=1000", 82.4, -1},
		{"Rebuild/fromscratch", 4e8, -1},
	}
	if len(got) != len(want) {
		t.Fatalf("parsed %d results, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("result %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestPairBench(t *testing.T) {
	all := parseBench([]byte(sampleBench))
	for _, tc := range []struct {
		name string
		kind benchKind
		par  bool
		want string
	}{
		{"Owner/instances=10", kindLocate, false, "ConsistentLocateKey/instances=10"},
		{"Owner/instances=1000", kindLocate, false, "ConsistentLocateKey/instances=1000"},
		{"OwnerParallel/instances=10", kindOwner, false, "Owner/instances=10"},
		{"Rebuild/instances=1000", kindLocate, true, ""},
	} {
		var r benchResult
		for _, x := range all {
			if x.name == tc.name {
				r = x
			}
		}
		got, ok := pair(all, r, tc.kind, tc.par)
		if got.name != tc.want || ok != (tc.want != "") {
			t.Errorf("pair(%s) = %q, %v; want %q", tc.name, got.name, ok, tc.want)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestRebuildGoal(t *testing.T) {
	for _, tc := range []struct {
		name string
		want float64
	}{
		{"Rebuild/instances=100", rebuildGoalNs},
		{"Rebuild/instances=1000", rebuildGoalNs},
		{"Rebuild/instances=5000", largeRebuildGoalNs},
		{"Rebuild/instances=10000", largeRebuildGoalNs},
		{"Rebuild/fromscratch", rebuildGoalNs},
	} {
		if got := rebuildGoal(benchResult{name: tc.name}); got != tc.want {
			t.Errorf("rebuildGoal(%s) = %g, want %g", tc.name, got, tc.want)
		}
	}
}

func TestRingBytes(t *testing.T) {
	out := []byte(sampleBench + `BenchmarkMemory/instances=8-2   	       5	   7287608 ns/op	     49520 B/builder	   2097358 B/ring
`)
	got := ringBytes(out)
	if len(got) != 1 || got["Memory/instances=8"] != "48 KiB/builder, 2048 KiB/ring" {
		t.Errorf("ringBytes = %q, want Memory/instances=8: 48 KiB/builder, 2048 KiB/ring", got)
	}
}
