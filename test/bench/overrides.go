package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"ringman/httpapi"
	"ringman/test/cluster"
)

// Goals of the host overrides.
const (
	// lookupRatioGoal: a lookup costs the same with 100,000 overrides as
	// with 1,000 ("ns/op unchanged within noise").
	lookupRatioGoal = 1.1
	// missRatioGoal bounds a lookup for a host without an override,
	// with 1,000 or 100,000 overrides, against one with none at all.
	missRatioGoal = 1.5
	// importGoal bounds a bulk import of importCount entries through the
	// HTTP API of one node (validation, one fsynced commit per request).
	importGoal = 5 * time.Second
	// freshGoal bounds the time from starting a node with --join until it
	// has every one of the importCount entries (fast profile: the join's
	// full state exchange carries them).
	freshGoal = 10 * time.Second

	importCount = 100_000
	// spreadGoal bounds the time from the start of a bulk import of
	// spreadCount entries on one node of 3 until every node has them all
	// (sent to each member directly; push/pull, every 5 s in the fast
	// profile, would take seconds).
	spreadGoal  = time.Second
	spreadCount = 16_500
	// freshPoll is how often the fresh node is asked; freshBound bounds it.
	freshPoll  = 100 * time.Millisecond
	freshBound = 30 * time.Second

	lookupBenchPattern = "BenchmarkLookupOverrides"
	// lookupBenchCount runs the lookup benchmarks this many times; rows
	// show the median.
	lookupBenchCount = 3
)

// overrideRows runs the router's lookup benchmarks with 0, 1,000 and
// 100,000 overrides, then times a bulk import of importCount overrides on a
// real node and how long a node that joins it takes to have them all, and
// single writes in tables of 1,000 and 100,000 (writeRows).
func overrideRows(ctx context.Context, o options, dir string, cl *cleanups) ([]row, error) {
	rows, err := lookupOverrideRows(ctx, o)
	if err != nil {
		return rows, err
	}
	spread, err := spreadRow(ctx, o, dir, cl)
	rows = append(rows, spread)
	if err != nil {
		return rows, err
	}
	more, err := importRows(ctx, o, dir, cl)
	rows = append(rows, more...)
	if err != nil {
		return rows, err
	}
	writes, err := writeRows(ctx, o, dir, cl)
	return append(rows, writes...), err
}

// spreadRow starts 3 nodes, imports spreadCount overrides through the HTTP
// API of the first, and times how long until all 3 have them all.
func spreadRow(ctx context.Context, o options, dir string, cl *cleanups) (rw row, err error) {
	rw = row{
		measurement: fmt.Sprintf("bulk import of %s entries on 1 of 3 nodes → on all 3", thousands(spreadCount)),
		goal:        fmt.Sprintf("≤ %.0f s", spreadGoal.Seconds()),
		met:         "ERROR",
	}
	c := cluster.New(o.bin, filepath.Join(dir, "spread"))
	cl.add(c.Kill)
	defer func() {
		if err != nil {
			rw.ringman = "failed"
			err = fmt.Errorf("%w\nnode logs:\n%s", err, c.Logs())
		}
		c.Kill()
	}()
	nodes, err := c.StartRing(ctx, "spread", "web", 3)
	if err != nil {
		return rw, err
	}
	want := make([]string, len(nodes))
	for i, n := range nodes {
		want[i] = n.Instance()
	}
	if err := cluster.WaitInstances(ctx, nodes, want); err != nil {
		return rw, err
	}
	batches, err := importBatches(spreadCount, httpapi.MaxBody)
	if err != nil {
		return rw, err
	}
	hc := &http.Client{Timeout: time.Minute}
	progress("overrides: importing %d entries in %d POSTs on one node of 3", spreadCount, len(batches))
	start := time.Now()
	for i, b := range batches {
		status, _, msg, err := postEntries(ctx, hc, nodes[0].HTTPAddr, b)
		if err != nil {
			return rw, fmt.Errorf("spread POST %d of %d: %w", i+1, len(batches), err)
		}
		if status != http.StatusOK {
			return rw, fmt.Errorf("spread POST %d of %d: status %d, want 200: %s", i+1, len(batches), status, msg)
		}
	}
	posted := time.Since(start)
	var took time.Duration
	pctx, cancel := context.WithTimeout(ctx, freshBound)
	defer cancel()
	// The last host first (a cheap GET), then the full list to count.
	last := importHost(spreadCount - 1)
	err = cluster.Poll(pctx, 10*time.Millisecond, fmt.Sprintf("all 3 nodes have the %d imported overrides", spreadCount), func() (bool, string) {
		for _, n := range nodes {
			if _, err := n.API().Host(pctx, last); err != nil {
				return false, fmt.Sprintf("%s: GET %s: %v", n.Name, last, err)
			}
		}
		took = time.Since(start)
		for _, n := range nodes {
			list, err := n.API().Hosts(pctx)
			if err != nil {
				return false, fmt.Sprintf("%s: GET /entries.json: %v", n.Name, err)
			}
			if len(list) != spreadCount {
				return false, fmt.Sprintf("%s lists %d", n.Name, len(list))
			}
		}
		return true, ""
	})
	if err != nil {
		return rw, err
	}
	progress("overrides: %d entries on all 3 nodes %v after the import began (its POSTs took %v)", spreadCount, took.Round(time.Millisecond), posted.Round(time.Millisecond))
	rw.ringman = fmt.Sprintf("%.2f s", took.Seconds())
	rw.peer = fmt.Sprintf("POSTs took %.2f s", posted.Seconds())
	rw.met = yesNo(took <= spreadGoal)
	return rw, nil
}

func lookupOverrideRows(ctx context.Context, o options) ([]row, error) {
	root, err := cluster.ModuleRoot()
	if err != nil {
		return nil, err
	}
	progress("overrides: go test -bench '%s' -count %d ./router/", lookupBenchPattern, lookupBenchCount)
	cmd := groupCommand(ctx, "go", "test", "-run", "^$", "-bench", lookupBenchPattern,
		"-benchmem", "-benchtime", o.benchtime, "-count", strconv.Itoa(lookupBenchCount), "-timeout", "3m", "./router/")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go test -bench ./router/: %w\n%s%s", err, lastLines(out, 10), stderr.Bytes())
	}
	return lookupRowsFrom(medianBench(parseBench(out))), nil
}

// medianBench merges repeated results of one benchmark (-count): the median
// ns/op and the largest allocs/op, in the order of first appearance.
func medianBench(all []benchResult) []benchResult {
	var order []string
	ns := map[string][]float64{}
	allocs := map[string]float64{}
	for _, r := range all {
		if _, seen := ns[r.name]; !seen {
			order = append(order, r.name)
			allocs[r.name] = r.allocs
		}
		ns[r.name] = append(ns[r.name], r.nsPerOp)
		allocs[r.name] = max(allocs[r.name], r.allocs)
	}
	out := make([]benchResult, len(order))
	for i, name := range order {
		out[i] = benchResult{name: name, nsPerOp: median(ns[name]), allocs: allocs[name]}
	}
	return out
}

// lookupRowsFrom turns BenchmarkLookupOverrides/overrides=N/variant results
// into rows: each miss (the ring answers) against the miss with no
// overrides, and the override hits with their allocations.
func lookupRowsFrom(results []benchResult) []row {
	find := func(name string) (benchResult, bool) {
		for _, r := range results {
			if r.name == name {
				return r, true
			}
		}
		return benchResult{}, false
	}
	const prefix = "LookupOverrides/overrides="
	base, haveBase := find(prefix + "0/miss")
	var rows []row
	if haveBase {
		rows = append(rows, row{
			measurement: "lookup, 0 overrides (ring answers)",
			ringman:     fmtResult(base),
			goal:        "0 allocs",
			met:         yesNo(base.allocs == 0),
		})
	} else {
		rows = append(rows, row{measurement: "lookup, 0 overrides", ringman: "no result for " + prefix + "0/miss", met: "ERROR"})
	}
	for _, size := range []int{1_000, 100_000} {
		r, ok := find(fmt.Sprintf("%s%d/miss", prefix, size))
		label := fmt.Sprintf("lookup, %s overrides (1%% *.), host without one (ring answers)", thousands(size))
		if !ok {
			rows = append(rows, row{measurement: label, ringman: fmt.Sprintf("no result for %s%d/miss", prefix, size), met: "ERROR"})
			continue
		}
		rw := row{measurement: label, ringman: fmtResult(r), goal: fmt.Sprintf("≤ %.1f× 0 overrides, 0 allocs", missRatioGoal)}
		ok = r.allocs == 0
		if haveBase && base.nsPerOp > 0 {
			ratio := r.nsPerOp / base.nsPerOp
			rw.peer = "0 overrides " + fmtNs(base.nsPerOp)
			rw.ratio = fmt.Sprintf("%.2f×", ratio)
			ok = ok && ratio <= missRatioGoal
		} else {
			ok = false
			rw.peer = "no 0-override run"
		}
		rw.met = yesNo(ok)
		rows = append(rows, rw)
	}
	// Size independence: 100,000 against 1,000 overrides, same code path.
	small, ok1 := find(prefix + "1000/miss")
	large, ok2 := find(prefix + "100000/miss")
	if ok1 && ok2 && small.nsPerOp > 0 {
		ratio := large.nsPerOp / small.nsPerOp
		rows = append(rows, row{
			measurement: "lookup, 100,000 vs 1,000 overrides, host without one",
			ringman:     fmtNs(large.nsPerOp) + "/op",
			peer:        "1,000 overrides " + fmtNs(small.nsPerOp),
			ratio:       fmt.Sprintf("%.2f×", ratio),
			goal:        fmt.Sprintf("≤ %.1f×", lookupRatioGoal),
			met:         yesNo(ratio <= lookupRatioGoal),
		})
	}
	for _, size := range []int{1_000, 100_000} {
		for _, v := range []string{"wildcard", "exact"} {
			r, ok := find(fmt.Sprintf("%s%d/%s", prefix, size, v))
			if !ok {
				continue
			}
			rows = append(rows, row{
				measurement: fmt.Sprintf("lookup, %s overrides, %s override hit", thousands(size), v),
				ringman:     fmtResult(r),
				goal:        "0 allocs",
				met:         yesNo(r.allocs == 0),
			})
		}
	}
	return rows
}

// importHost is the i-th host of the bulk import.
func importHost(i int) string { return fmt.Sprintf("h%06d.import.example.com", i) }

// importBatches encodes count overrides as JSON arrays for POST
// /entries.json, each as large as fits in limit bytes.
func importBatches(count, limit int) ([][]byte, error) {
	var batches [][]byte
	cur := []byte{'['}
	for i := range count {
		el, err := json.Marshal(map[string]string{
			"host":    importHost(i),
			"backend": fmt.Sprintf("10.2.%d.%d:8080", i/250%250, i%250+1),
		})
		if err != nil {
			return nil, err
		}
		if len(cur) > 1 && len(cur)+1+len(el)+1 > limit {
			batches = append(batches, append(cur, ']'))
			cur = []byte{'['}
		}
		if len(cur) > 1 {
			cur = append(cur, ',')
		}
		cur = append(cur, el...)
		if len(cur)+1 > limit {
			return nil, fmt.Errorf("one entry is over %d bytes", limit)
		}
	}
	return append(batches, append(cur, ']')), nil
}

// postEntries posts body to /entries.json and returns the status, the
// number of entries in a 200 answer, and the start of any other answer.
func postEntries(ctx context.Context, hc *http.Client, addr string, body []byte) (int, int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/entries.json", bytes.NewReader(body))
	if err != nil {
		return 0, 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, 0, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, 0, firstLine(string(bytes.TrimSpace(raw))), nil
	}
	var out []httpapi.Override
	if err := json.Unmarshal(raw, &out); err != nil {
		return resp.StatusCode, 0, "", fmt.Errorf("answer is not a list of overrides: %w", err)
	}
	return resp.StatusCode, len(out), "", nil
}

// importRows starts a single node, imports importCount overrides through
// its HTTP API, then starts a second node that joins it and times how long
// it takes to have them all.
func importRows(ctx context.Context, o options, dir string, cl *cleanups) (rows []row, err error) {
	c := cluster.New(o.bin, dir)
	cl.add(c.Kill)
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\nnode logs:\n%s", err, c.Logs())
		}
		c.Kill()
	}()
	port, err := cluster.FreePort()
	if err != nil {
		return nil, err
	}
	seed, err := c.Start(ctx, cluster.NodeConfig{Name: "seed", Services: []string{fmt.Sprintf("web=127.0.0.1:%d", port)}})
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: time.Minute}

	// One request with every entry: over the API's body limit (README: HTTP API).
	all, err := importBatches(importCount, 1<<40)
	if err != nil {
		return nil, err
	}
	status, _, msg, err := postEntries(ctx, hc, seed.HTTPAddr, all[0])
	one := row{
		measurement: fmt.Sprintf("bulk import: one POST of all %s entries (%.1f MB)", thousands(importCount), float64(len(all[0]))/1e6),
		goal:        "413: body over 1 MiB (README: HTTP API)",
		met:         yesNo(err == nil && status == http.StatusRequestEntityTooLarge),
	}
	switch {
	case err != nil:
		one.ringman = "failed: " + err.Error()
	case status == http.StatusRequestEntityTooLarge:
		one.ringman = fmt.Sprintf("%d", status)
	default:
		one.ringman = fmt.Sprintf("%d %s", status, msg)
	}
	rows = append(rows, one)
	if status == http.StatusOK {
		return rows, fmt.Errorf("a %d-byte POST was accepted although the body limit is %d bytes", len(all[0]), httpapi.MaxBody)
	}

	// The import as a client has to do it: arrays that fit the limit.
	batches, err := importBatches(importCount, httpapi.MaxBody)
	if err != nil {
		return rows, err
	}
	progress("overrides: importing %d entries in %d POSTs of ≤ %d bytes", importCount, len(batches), httpapi.MaxBody)
	start := time.Now()
	got := 0
	each := make([]string, len(batches))
	for i, b := range batches {
		t0 := time.Now()
		status, n, msg, err := postEntries(ctx, hc, seed.HTTPAddr, b)
		each[i] = time.Since(t0).Round(time.Millisecond).String()
		if err != nil {
			return rows, fmt.Errorf("import POST %d of %d: %w", i+1, len(batches), err)
		}
		if status != http.StatusOK {
			return rows, fmt.Errorf("import POST %d of %d: status %d, want 200: %s", i+1, len(batches), status, msg)
		}
		got += n
	}
	took := time.Since(start)
	if got != importCount {
		return rows, fmt.Errorf("the import's answers list %d entries, want %d", got, importCount)
	}
	listed, err := seed.API().Hosts(ctx)
	if err != nil {
		return rows, fmt.Errorf("GET /entries.json after the import: %w", err)
	}
	if len(listed) != importCount {
		return rows, fmt.Errorf("GET /entries.json lists %d entries after the import, want %d", len(listed), importCount)
	}
	progress("overrides: import took %v (POSTs: %s)", took.Round(time.Millisecond), strings.Join(each, " "))
	rows = append(rows, row{
		measurement: fmt.Sprintf("bulk import: %s entries, %d POSTs ≤ 1 MiB (all 200)", thousands(importCount), len(batches)),
		ringman:     fmt.Sprintf("%.2f s", took.Seconds()),
		peer:        thousands(int(float64(importCount)/took.Seconds())) + " entries/s",
		goal:        fmt.Sprintf("≤ %.0f s", importGoal.Seconds()),
		met:         yesNo(took <= importGoal),
	})

	ready, have, err := freshJoin(ctx, c, seed)
	if err != nil {
		return rows, err
	}
	progress("overrides: fresh node ready after %v, had all %d entries after %v", ready.Round(time.Millisecond), importCount, have.Round(time.Millisecond))
	rows = append(rows, row{
		measurement: fmt.Sprintf("fresh node --join: start → has all %s entries", thousands(importCount)),
		ringman:     fmt.Sprintf("%.2f s", have.Seconds()),
		peer:        fmt.Sprintf("ready after %.2f s", ready.Seconds()),
		goal:        fmt.Sprintf("≤ %.0f s", freshGoal.Seconds()),
		met:         yesNo(have <= freshGoal),
	})
	return rows, nil
}

// freshJoin starts a node that joins seed and returns how long after its
// start it was ready, and had all importCount entries. A table merges a
// peer's state in one commit, so the first and last imported hosts are
// polled (cheap single-entry GETs) and, once both are there, the full list
// confirms the count; should it be short, the list is polled instead.
func freshJoin(ctx context.Context, c *cluster.Cluster, seed *cluster.Node) (ready, have time.Duration, err error) {
	port, err := cluster.FreePort()
	if err != nil {
		return 0, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, freshBound)
	defer cancel()
	start := time.Now()
	n, err := c.Start(ctx, cluster.NodeConfig{
		Name:     "fresh",
		Services: []string{fmt.Sprintf("web=127.0.0.1:%d", port)},
		Join:     []string{seed.GossipAddr},
	})
	if err != nil {
		return 0, 0, err
	}
	ready = time.Since(start)
	probes := []string{importHost(0), importHost(importCount - 1)}
	probed := false // both probes answered: from then on the list is polled
	err = cluster.Poll(ctx, freshPoll, fmt.Sprintf("node %s has all %d overrides", n.Name, importCount), func() (bool, string) {
		if !probed {
			for _, h := range probes {
				if _, err := n.API().Host(ctx, h); err != nil {
					if httpapi.IsNotFound(err) {
						return false, h + " not there yet"
					}
					return false, "GET " + h + ": " + err.Error()
				}
			}
			probed = true
			have = time.Since(start)
		}
		list, err := n.API().Hosts(ctx)
		if err != nil {
			have = 0
			return false, "GET /entries.json: " + err.Error()
		}
		if len(list) != importCount {
			have = 0 // not all there when the probes were: time the list
			return false, fmt.Sprintf("GET /entries.json lists %d", len(list))
		}
		if have == 0 {
			have = time.Since(start)
		}
		return true, ""
	})
	if err != nil {
		var why string
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			why = fmt.Sprintf(" (bound %v)", freshBound)
		}
		return ready, 0, fmt.Errorf("%w%s", err, why)
	}
	return ready, have, nil
}

// thousands formats n with commas: 100000 → "100,000".
func thousands(n int) string {
	s := strconv.Itoa(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Goals of single override writes in a large table.
const (
	// writeRatioGoal: one write in a table of 100,000 overrides costs at
	// most this many times one in a table of 1,000 (wall and CPU, the
	// writer's and a receiver's).
	writeRatioGoal = 2.0
	// writeRESPGoal bounds RESP GET's p99 on a node of 100,000 overrides
	// while writeRate writes a second run against it.
	writeRESPGoal = time.Millisecond
	writeRate     = 10
	// writeCount single writes are timed per table size and cluster size.
	writeCount = 60
	// writeWarmup writes precede each timed run.
	writeWarmup = 40
	// writeRESPFor is how long GETs are timed while writes run.
	writeRESPFor = 3 * time.Second
)

// writeCost is what writeCount single writes cost: the median wall time of
// one (POST to 200), and the CPU time per write of the writer and, in a
// cluster, of the receiver (until it has the last write).
type writeCost struct {
	wall        time.Duration
	writerCPU   time.Duration
	receiverCPU time.Duration
}

// writeRows times single override writes with 1,000 and 100,000 overrides
// stored, on one node and then with a second node that replicates them, and
// RESP GET latency on the node while 10 writes a second run at 100,000.
func writeRows(ctx context.Context, o options, dir string, cl *cleanups) ([]row, error) {
	sizes := []int{1_000, importCount}
	single := map[int]writeCost{}
	pair := map[int]writeCost{}
	var busy, idle respLatency
	for _, size := range sizes {
		s, c2, b, i, err := writeCosts(ctx, o, filepath.Join(dir, fmt.Sprint("write", size)), cl, size, size == importCount)
		if err != nil {
			return nil, err
		}
		single[size], pair[size] = s, c2
		if size == importCount {
			busy, idle = b, i
		}
	}
	return writeRowsFrom(single, pair, busy, idle), nil
}

// writeRowsFrom turns the measured costs into rows, each with its goal.
func writeRowsFrom(single, pair map[int]writeCost, busy, idle respLatency) []row {
	small, large := 1_000, importCount
	ratio := func(a, b time.Duration) float64 {
		if b <= 0 {
			return 0
		}
		return float64(a) / float64(b)
	}
	within := func(r float64) bool { return r > 0 && r <= writeRatioGoal }
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }
	goal := fmt.Sprintf("≤ %.0f× at %s", writeRatioGoal, thousands(small))
	var rows []row
	for _, c := range []struct {
		label string
		costs map[int]writeCost
	}{{"1 node", single}, {"2 nodes, writer", pair}} {
		s, l := c.costs[small], c.costs[large]
		rows = append(rows, row{
			measurement: fmt.Sprintf("override write (%s) at %s entries: wall, CPU", c.label, thousands(small)),
			ringman:     ms(s.wall) + ", " + ms(s.writerCPU) + " CPU",
			goal:        "reference",
			met:         "-",
		})
		rw, rc := ratio(l.wall, s.wall), ratio(l.writerCPU, s.writerCPU)
		rows = append(rows, row{
			measurement: fmt.Sprintf("override write (%s) at %s entries: wall, CPU", c.label, thousands(large)),
			ringman:     ms(l.wall) + ", " + ms(l.writerCPU) + " CPU",
			peer:        fmt.Sprintf("at %s: %s, %s CPU", thousands(small), ms(s.wall), ms(s.writerCPU)),
			ratio:       fmt.Sprintf("%.2f×, %.2f×", rw, rc),
			goal:        goal,
			met:         yesNo(within(rw) && within(rc)),
		})
	}
	s, l := pair[small], pair[large]
	r := ratio(l.receiverCPU, s.receiverCPU)
	rows = append(rows, row{
		measurement: fmt.Sprintf("2-node receiver CPU per write at %s entries", thousands(large)),
		ringman:     ms(l.receiverCPU),
		peer:        fmt.Sprintf("at %s: %s", thousands(small), ms(s.receiverCPU)),
		ratio:       fmt.Sprintf("%.2f×", r),
		goal:        goal,
		met:         yesNo(within(r)),
	})
	rows = append(rows, row{
		measurement: fmt.Sprintf("RESP GET p99 during %d writes/s at %s entries", writeRate, thousands(large)),
		ringman:     fmt.Sprintf("%.3f ms (max %.3f)", float64(busy.p99)/1e6, float64(busy.max)/1e6),
		peer:        fmt.Sprintf("no writes: %.3f ms (max %.3f)", float64(idle.p99)/1e6, float64(idle.max)/1e6),
		goal:        fmt.Sprintf("< %.0f ms", float64(writeRESPGoal)/1e6),
		met:         yesNo(busy.p99 > 0 && busy.p99 < writeRESPGoal),
	})
	return rows
}

// writeCosts starts a node, imports size overrides, times writeCount
// single writes on it alone (and, with resp, RESP GETs with and without
// writes running), then starts a second node that joins it, waits until it
// has every override, and times writeCount more writes with the receiver's
// CPU.
func writeCosts(ctx context.Context, o options, dir string, cl *cleanups, size int, resp bool) (single, pair writeCost, busy, idle respLatency, err error) {
	c := cluster.New(o.bin, dir)
	cl.add(c.Kill)
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\nnode logs:\n%s", err, c.Logs())
		}
		c.Kill()
	}()
	nodes, err := c.StartRing(ctx, fmt.Sprintf("w%d-", size), "web", 1)
	if err != nil {
		return
	}
	writer := nodes[0]
	batches, err := importBatches(size, httpapi.MaxBody)
	if err != nil {
		return
	}
	hc := &http.Client{Timeout: time.Minute}
	progress("overrides: importing %d entries to time single writes", size)
	for i, b := range batches {
		status, _, msg, perr := postEntries(ctx, hc, writer.HTTPAddr, b)
		if perr != nil || status != http.StatusOK {
			err = fmt.Errorf("import POST %d of %d: status %d %s: %v", i+1, len(batches), status, msg, perr)
			return
		}
	}
	written := 0
	write := func() (time.Duration, error) {
		host := fmt.Sprintf("w%06d.write.example.com", written)
		written++
		t0 := time.Now()
		if _, err := writer.API().SetHost(ctx, host, fmt.Sprintf("10.3.%d.%d:8080", written/250%250, written%250+1)); err != nil {
			return 0, fmt.Errorf("POST %s: %w", host, err)
		}
		return time.Since(t0), nil
	}
	timed := func(nodes ...*cluster.Node) (wall time.Duration, cpu []time.Duration, err error) {
		// The first writes after an import or a join run slower
		// whatever the table's size (at 1,000 as at 100,000): time the
		// steady state.
		for range writeWarmup {
			if _, err := write(); err != nil {
				return 0, nil, err
			}
		}
		before := make([]time.Duration, len(nodes))
		for i, n := range nodes {
			if before[i], err = processCPU(n.Pid()); err != nil {
				return 0, nil, err
			}
		}
		walls := make([]float64, writeCount)
		for i := range walls {
			d, err := write()
			if err != nil {
				return 0, nil, err
			}
			walls[i] = float64(d)
		}
		last := fmt.Sprintf("w%06d.write.example.com", written-1)
		for _, n := range nodes[1:] {
			if err := cluster.Poll(ctx, time.Millisecond, n.Name+" has "+last, func() (bool, string) {
				_, err := n.API().Host(ctx, last)
				return err == nil, fmt.Sprint(err)
			}); err != nil {
				return 0, nil, err
			}
		}
		cpu = make([]time.Duration, len(nodes))
		for i, n := range nodes {
			after, err := processCPU(n.Pid())
			if err != nil {
				return 0, nil, err
			}
			cpu[i] = (after - before[i]) / writeCount
		}
		return time.Duration(median(walls)), cpu, nil
	}
	var cpu []time.Duration
	if single.wall, cpu, err = timed(writer); err != nil {
		return
	}
	single.writerCPU = cpu[0]
	progress("overrides: %d entries, 1 node: a write takes %v, %v CPU", size, single.wall, single.writerCPU)
	if resp {
		if idle, err = getLatency(ctx, writer, 0, write); err != nil {
			return
		}
		if busy, err = getLatency(ctx, writer, writeRate, write); err != nil {
			return
		}
		progress("overrides: RESP GET p99 %v, max %v with %d writes/s (%v, %v without)", busy.p99, busy.max, writeRate, idle.p99, idle.max)
	}
	port, err := cluster.FreePort()
	if err != nil {
		return
	}
	receiver, err := c.Start(ctx, cluster.NodeConfig{Name: fmt.Sprintf("w%d-2", size),
		Services: []string{fmt.Sprintf("web=127.0.0.1:%d", port)}, Join: []string{writer.GossipAddr}})
	if err != nil {
		return
	}
	want := size + written
	pctx, cancel := context.WithTimeout(ctx, freshBound)
	defer cancel()
	if err = cluster.Poll(pctx, freshPoll, fmt.Sprintf("%s has all %d overrides", receiver.Name, want), func() (bool, string) {
		list, err := receiver.API().Hosts(pctx)
		if err != nil {
			return false, err.Error()
		}
		return len(list) == want, fmt.Sprintf("it lists %d", len(list))
	}); err != nil {
		return
	}
	if pair.wall, cpu, err = timed(writer, receiver); err != nil {
		return
	}
	pair.writerCPU, pair.receiverCPU = cpu[0], cpu[1]
	progress("overrides: %d entries, 2 nodes: a write takes %v, %v CPU on the writer, %v on the receiver", size, pair.wall, pair.writerCPU, pair.receiverCPU)
	return single, pair, busy, idle, nil
}

// respLatency is the p99 and the longest of a run of GETs.
type respLatency struct{ p99, max time.Duration }

// getLatency times GETs, one at a time, for writeRESPFor while rate
// writes a second run (none with rate 0).
func getLatency(ctx context.Context, n *cluster.Node, rate int, write func() (time.Duration, error)) (respLatency, error) {
	rdb := n.Redis()
	stop := make(chan struct{})
	werr := make(chan error, 1)
	go func() {
		if rate == 0 {
			werr <- nil
			return
		}
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for {
			select {
			case <-stop:
				werr <- nil
				return
			case <-tick.C:
				if _, err := write(); err != nil {
					werr <- err
					return
				}
			}
		}
	}()
	var lat []float64
	end := time.Now().Add(writeRESPFor)
	var err error
	for i := 0; time.Now().Before(end); i++ {
		t0 := time.Now()
		if e := rdb.Get(ctx, fmt.Sprintf("www.shop%d.example.org/v/%d.ts", i, i)).Err(); e != nil {
			err = fmt.Errorf("RESP GET: %w", e)
			break
		}
		lat = append(lat, float64(time.Since(t0)))
	}
	close(stop)
	if e := <-werr; err == nil && e != nil {
		err = e
	}
	if err == nil && len(lat) == 0 {
		err = errors.New("no GET was timed")
	}
	if err != nil {
		return respLatency{}, err
	}
	p99 := percentile(lat, 0.99) // sorts lat
	return respLatency{p99: time.Duration(p99), max: time.Duration(lat[len(lat)-1])}, nil
}

// percentile returns the p-th fraction of xs (sorted in place), nearest rank.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	return xs[min(len(xs)-1, int(p*float64(len(xs))))]
}

// processCPU is the CPU time, user and system, of every thread of process
// pid so far, from /proc/<pid>/task/*/schedstat (nanoseconds, where
// /proc/<pid>/stat counts 10 ms ticks).
func processCPU(pid int) (time.Duration, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("CPU time of process %d: no /proc/%d/task/*/schedstat", pid, pid)
	}
	var total time.Duration
	for _, path := range tasks {
		raw, err := os.ReadFile(path)
		if err != nil {
			continue // a thread that exited
		}
		f := strings.Fields(string(raw))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("CPU time of process %d: %s: %q", pid, path, raw)
		}
		total += time.Duration(ns)
	}
	return total, nil
}
