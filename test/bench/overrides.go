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
	// writeWarmup writes precede each timed run: the first writes after
	// an import or a join run slower whatever the table's size (at 1,000
	// as at 100,000).
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
// RESP GET latency on the node while 10 writes a second run at 100,000. The
// two sizes run side by side and are timed in alternating rounds, so that
// the machine's noise falls on both alike.
func writeRows(ctx context.Context, o options, dir string, cl *cleanups) (rows []row, err error) {
	sizes := []int{1_000, importCount}
	benches := make([]*writeBench, len(sizes))
	defer func() {
		for _, wb := range benches {
			if wb == nil {
				continue
			}
			if err != nil {
				err = fmt.Errorf("%w\nnode logs (%s):\n%s", err, thousands(wb.size), wb.c.Logs())
			}
			wb.c.Kill()
		}
	}()
	for i, size := range sizes {
		if benches[i], err = startWriteBench(ctx, o, filepath.Join(dir, fmt.Sprint("write", size)), cl, size); err != nil {
			return nil, err
		}
	}
	single, err := timeWrites(ctx, benches)
	if err != nil {
		return nil, err
	}
	large := benches[len(benches)-1]
	write := func() (time.Duration, error) { return large.write(ctx) }
	idle, err := getLatency(ctx, large.writer, 0, write)
	if err != nil {
		return nil, err
	}
	busy, err := getLatency(ctx, large.writer, writeRate, write)
	if err != nil {
		return nil, err
	}
	progress("overrides: RESP GET p99 %v, max %v with %d writes/s (%v, %v without)", busy.p99, busy.max, writeRate, idle.p99, idle.max)
	for _, wb := range benches {
		if err := wb.addReceiver(ctx); err != nil {
			return nil, err
		}
	}
	pair, err := timeWrites(ctx, benches)
	if err != nil {
		return nil, err
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

// writeBench is a node holding size imported overrides, and later a second
// node that joined it.
type writeBench struct {
	size             int
	c                *cluster.Cluster
	writer, receiver *cluster.Node
	written          int // single writes so far
}

// startWriteBench starts a node and imports size overrides into it.
func startWriteBench(ctx context.Context, o options, dir string, cl *cleanups, size int) (*writeBench, error) {
	wb := &writeBench{size: size, c: cluster.New(o.bin, dir)}
	cl.add(wb.c.Kill)
	nodes, err := wb.c.StartRing(ctx, fmt.Sprintf("w%d-", size), "web", 1)
	if err != nil {
		return wb, err
	}
	wb.writer = nodes[0]
	batches, err := importBatches(size, httpapi.MaxBody)
	if err != nil {
		return wb, err
	}
	hc := &http.Client{Timeout: time.Minute}
	progress("overrides: importing %d entries to time single writes", size)
	for i, b := range batches {
		status, _, msg, err := postEntries(ctx, hc, wb.writer.HTTPAddr, b)
		if err != nil || status != http.StatusOK {
			return wb, fmt.Errorf("import POST %d of %d: status %d %s: %v", i+1, len(batches), status, msg, err)
		}
	}
	return wb, nil
}

func (wb *writeBench) host(i int) string { return fmt.Sprintf("w%06d.write.example.com", i) }

// write sets one more override through the writer's HTTP API and returns
// how long the POST took.
func (wb *writeBench) write(ctx context.Context) (time.Duration, error) {
	host := wb.host(wb.written)
	wb.written++
	t0 := time.Now()
	if _, err := wb.writer.API().SetHost(ctx, host, fmt.Sprintf("10.3.%d.%d:8080", wb.written/250%250, wb.written%250+1)); err != nil {
		return 0, fmt.Errorf("POST %s: %w", host, err)
	}
	return time.Since(t0), nil
}

// addReceiver starts a node that joins the writer and waits until it has
// every override.
func (wb *writeBench) addReceiver(ctx context.Context) error {
	port, err := cluster.FreePort()
	if err != nil {
		return err
	}
	if wb.receiver, err = wb.c.Start(ctx, cluster.NodeConfig{Name: fmt.Sprintf("w%d-2", wb.size),
		Services: []string{fmt.Sprintf("web=127.0.0.1:%d", port)}, Join: []string{wb.writer.GossipAddr}}); err != nil {
		return err
	}
	want := wb.size + wb.written
	pctx, cancel := context.WithTimeout(ctx, freshBound)
	defer cancel()
	return cluster.Poll(pctx, freshPoll, fmt.Sprintf("%s has all %d overrides", wb.receiver.Name, want), func() (bool, string) {
		list, err := wb.receiver.API().Hosts(pctx)
		if err != nil {
			return false, err.Error()
		}
		return len(list) == want, fmt.Sprintf("it lists %d", len(list))
	})
}

// Single writes are timed in writeRounds rounds of writeCount/writeRounds
// writes, alternating between the table sizes.
const writeRounds = 6

// timeWrites times writeCount single writes on each bench (after
// writeWarmup untimed ones), in alternating rounds, with the receiver's
// CPU when there is one (until it has the round's last write).
func timeWrites(ctx context.Context, benches []*writeBench) (map[int]writeCost, error) {
	walls := map[int][]float64{}
	cpu := map[int][2]time.Duration{}
	for _, wb := range benches {
		for range writeWarmup {
			if _, err := wb.write(ctx); err != nil {
				return nil, err
			}
		}
	}
	for round := range writeRounds {
		for k := range benches {
			wb := benches[(k+round)%len(benches)] // who goes first alternates too
			nodes := []*cluster.Node{wb.writer}
			if wb.receiver != nil {
				nodes = append(nodes, wb.receiver)
			}
			before := make([]time.Duration, len(nodes))
			for i, n := range nodes {
				var err error
				if before[i], err = processCPU(n.Pid()); err != nil {
					return nil, err
				}
			}
			for range writeCount / writeRounds {
				d, err := wb.write(ctx)
				if err != nil {
					return nil, err
				}
				walls[wb.size] = append(walls[wb.size], float64(d))
			}
			if wb.receiver != nil {
				last := wb.host(wb.written - 1)
				if err := cluster.Poll(ctx, time.Millisecond, wb.receiver.Name+" has "+last, func() (bool, string) {
					_, err := wb.receiver.API().Host(ctx, last)
					return err == nil, fmt.Sprint(err)
				}); err != nil {
					return nil, err
				}
			}
			sum := cpu[wb.size]
			for i, n := range nodes {
				after, err := processCPU(n.Pid())
				if err != nil {
					return nil, err
				}
				sum[i] += after - before[i]
			}
			cpu[wb.size] = sum
		}
	}
	out := map[int]writeCost{}
	for _, wb := range benches {
		n := time.Duration(len(walls[wb.size]))
		c := writeCost{wall: time.Duration(median(walls[wb.size])), writerCPU: cpu[wb.size][0] / n, receiverCPU: cpu[wb.size][1] / n}
		out[wb.size] = c
		progress("overrides: %d entries, %d node(s): a write takes %v, %v CPU on the writer, %v on a receiver",
			wb.size, 1+min(1, len(wb.c.Nodes())-1), c.wall, c.writerCPU, c.receiverCPU)
	}
	return out, nil
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
