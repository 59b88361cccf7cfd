package main

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"ringman/test/cluster"
)

// Goals of the in-process ring: a rebuild after one change takes at most
// 20 ms up to 1,000 instances and 50 ms above (the benchmark goes to 10,000).
const (
	ownerGoalNs        = 50.0
	rebuildGoalNs      = 20e6
	largeRebuildGoalNs = 50e6
	largeRing          = 1000
)

const ringBenchPattern = "BenchmarkOwner|BenchmarkRebuild|BenchmarkConsistentLocateKey|BenchmarkMemory"

// rebuildGoal is the goal of a Rebuild result, by its instance count.
func rebuildGoal(r benchResult) float64 {
	if n, err := strconv.Atoi(r.size()); err == nil && n > largeRing {
		return largeRebuildGoalNs
	}
	return rebuildGoalNs
}

// ringBytes reads the B/ring and B/builder metrics of BenchmarkMemory lines,
// by result name, as one readable figure.
func ringBytes(out []byte) map[string]string {
	res := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		var parts []string
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			if unit := f[i+1]; unit == "B/ring" || unit == "B/builder" {
				if v, err := strconv.ParseFloat(f[i], 64); err == nil {
					parts = append(parts, fmt.Sprintf("%.0f KiB/%s", v/1024, strings.TrimPrefix(unit, "B/")))
				}
			}
		}
		if len(parts) > 0 {
			res[procSuffix.ReplaceAllString(m[1], "")] = strings.Join(parts, ", ")
		}
	}
	return res
}

// benchResult is one `Benchmark...` line of go test.
type benchResult struct {
	name    string // without "Benchmark" and the -GOMAXPROCS suffix
	nsPerOp float64
	allocs  float64 // -1 when not reported
}

var (
	benchLine  = regexp.MustCompile(`^Benchmark(\S+)\s+(\d+)\s+(.*)$`)
	procSuffix = regexp.MustCompile(`-\d+$`)
	digitRuns  = regexp.MustCompile(`\d+`)
	nonAlnum   = regexp.MustCompile(`[^a-z0-9]+`)
)

// parseBench reads every benchmark line of go test output, whatever its
// name and extra metrics.
func parseBench(out []byte) []benchResult {
	var res []benchResult
	for _, line := range strings.Split(string(out), "\n") {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		r := benchResult{name: procSuffix.ReplaceAllString(m[1], ""), nsPerOp: -1, allocs: -1}
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				r.nsPerOp = v
			case "allocs/op":
				r.allocs = v
			}
		}
		if r.nsPerOp >= 0 {
			res = append(res, r)
		}
	}
	return res
}

type benchKind int

const (
	kindOther benchKind = iota
	kindOwner
	kindLocate
	kindRebuild
)

func (r benchResult) kind() benchKind {
	l := strings.ToLower(r.name)
	switch {
	case strings.Contains(l, "locatekey"):
		return kindLocate
	case strings.HasPrefix(l, "owner"):
		return kindOwner
	case strings.HasPrefix(l, "rebuild"):
		return kindRebuild
	}
	return kindOther
}

func (r benchResult) parallel() bool {
	return strings.Contains(strings.ToLower(r.name), "parallel")
}

// shape is the name without the benchmark family and serial/parallel words,
// so that Owner/n=100 pairs with ConsistentLocateKey/n=100 and
// Owner/n=100/parallel with Owner/n=100/serial.
func (r benchResult) shape() string {
	l := strings.ToLower(r.name)
	for _, w := range []string{"consistentlocatekey", "locatekey", "owner", "parallel", "serial"} {
		l = strings.ReplaceAll(l, w, "")
	}
	return nonAlnum.ReplaceAllString(l, "")
}

// size is the digits in the name, e.g. "1000" for Owner/instances=1000.
func (r benchResult) size() string {
	return strings.Join(digitRuns.FindAllString(r.name, -1), ",")
}

// pair finds the result of kind k and parallelism par with the same shape,
// else the same size.
func pair(all []benchResult, r benchResult, k benchKind, par bool) (benchResult, bool) {
	for _, match := range []func(benchResult) bool{
		func(o benchResult) bool { return o.shape() == r.shape() },
		func(o benchResult) bool { return o.size() == r.size() },
	} {
		for _, o := range all {
			if o.kind() == k && o.parallel() == par && o.name != r.name && match(o) {
				return o, true
			}
		}
	}
	return benchResult{}, false
}

func fmtNs(ns float64) string {
	switch {
	case ns < 1e3:
		return fmt.Sprintf("%.1f ns", ns)
	case ns < 1e6:
		return fmt.Sprintf("%.1f µs", ns/1e3)
	default:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	}
}

func fmtResult(r benchResult) string {
	s := fmtNs(r.nsPerOp) + "/op"
	if r.allocs >= 0 {
		s += fmt.Sprintf(", %g allocs", r.allocs)
	}
	return s
}

// ringRows runs the ring package's benchmarks and compares them with their
// goals and with the library's LocateKey.
func ringRows(ctx context.Context, o options, _ string, _ *cleanups) ([]row, error) {
	root, err := cluster.ModuleRoot()
	if err != nil {
		return nil, err
	}
	progress("ring: go test -bench '%s' ./ring/", ringBenchPattern)
	cmd := groupCommand(ctx, "go", "test", "-run", "^$", "-bench", ringBenchPattern,
		"-benchmem", "-benchtime", o.benchtime, "-count", "1", "-timeout", "5m", "./ring/")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go test -bench ./ring/: %w\n%s%s", err, lastLines(out, 10), stderr.Bytes())
	}
	results := parseBench(out)
	if len(results) == 0 {
		return []row{{measurement: "ring benchmarks", ringman: "none matched " + ringBenchPattern, met: "ERROR"}}, nil
	}
	heap := ringBytes(out)
	used := map[string]bool{}
	var rows []row
	for _, r := range results {
		switch r.kind() {
		case kindOwner:
			rw := row{measurement: "ring " + r.name, ringman: fmtResult(r), goal: fmt.Sprintf("≤ %g ns, 0 allocs", ownerGoalNs)}
			ok := r.nsPerOp <= ownerGoalNs && r.allocs == 0
			if r.parallel() {
				rw.goal += ", ≤ 1.0× serial"
				if s, found := pair(results, r, kindOwner, false); found {
					rw.peer = "serial " + fmtNs(s.nsPerOp)
					ratio := r.nsPerOp / s.nsPerOp
					rw.ratio = fmt.Sprintf("%.2f×", ratio)
					ok = ok && ratio <= 1.0
				} else {
					rw.peer = "no serial run"
				}
			} else if l, found := pair(results, r, kindLocate, false); found {
				used[l.name] = true
				rw.peer = "LocateKey " + fmtNs(l.nsPerOp)
				rw.ratio = fmt.Sprintf("%.2f×", r.nsPerOp/l.nsPerOp)
			}
			rw.met = yesNo(ok)
			rows = append(rows, rw)
		case kindRebuild:
			goal := rebuildGoal(r)
			rows = append(rows, row{measurement: "ring " + r.name, ringman: fmtResult(r), goal: "≤ " + fmtNs(goal), met: yesNo(r.nsPerOp <= goal)})
		}
	}
	for _, r := range results {
		switch {
		case r.kind() == kindLocate && !used[r.name]:
			rows = append(rows, row{measurement: "ring " + r.name + " (library)", peer: fmtResult(r)})
		case r.kind() == kindOther:
			shown := fmtResult(r)
			if b, ok := heap[r.name]; ok {
				shown = b
			}
			rows = append(rows, row{measurement: "ring " + r.name, ringman: shown})
		}
	}
	return rows, nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}
