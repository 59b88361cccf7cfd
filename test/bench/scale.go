package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"ringman/test/cluster"
)

// Goals of a cluster of many processes on one machine, for the profile the
// README tells a datacenter to use.
const (
	scaleJoinGoal  = 5 * time.Second // every node started and joined -> every node has every instance
	scaleCrashGoal = 2 * time.Second // kill -9 -> out of every survivor's ring, at 50 nodes
	// scaleJoinBound bounds the wait for convergence: past it the row says
	// how many node pairs were still missing.
	scaleJoinBound = 120 * time.Second
	// scaleIdle is the window in which idle CPU, RSS and false failures are
	// counted, once converged.
	scaleIdle = 15 * time.Second
	// scaleStarters is how many processes are started at once.
	scaleStarters = 8
	// scalePoll is the pause between sweeps over every node's RING.MEMBERS.
	scalePoll = 100 * time.Millisecond
)

// failedLine is what a node logs when gossip declares another member failed.
const failedLine = `msg="node failed"`

// scaleRows starts clusters of o.scaleNodes processes for each of
// o.scaleProfiles and measures, for each: join to converged, false failures
// while idle, idle CPU and RSS per node, and kill -9 to dropped everywhere.
func scaleRows(ctx context.Context, o options, dir string, cl *cleanups) ([]row, error) {
	var rows []row
	for _, profile := range strings.Split(o.scaleProfiles, ",") {
		for _, s := range strings.Split(o.scaleNodes, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 3 {
				return rows, fmt.Errorf("-scale-nodes: %q is not a node count of 3 or more", s)
			}
			r, err := scaleOnce(ctx, o, filepath.Join(dir, fmt.Sprintf("%s-%d", profile, n)), profile, n, cl)
			rows = append(rows, r...)
			if err != nil {
				return rows, fmt.Errorf("%d nodes, %s: %w", n, profile, err)
			}
		}
	}
	return rows, nil
}

// scaleResult is what one cluster measured.
type scaleResult struct {
	join      time.Duration // every process ready -> converged; 0 when not converged
	missing   int           // node pairs missing at the bound, when not converged
	failed    int           // "node failed" lines while idle
	cpu       float64       // median share of one core per node while idle
	rssMiB    float64       // median resident memory per node
	crash     time.Duration // 0 when not dropped everywhere
	crashWhy  string
	startedIn time.Duration // time to start every process
}

func scaleOnce(ctx context.Context, o options, dir, profile string, count int, cl *cleanups) ([]row, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	progress("scale: %d nodes, profile %s", count, profile)
	c := cluster.New(o.bin, dir)
	cl.add(c.Kill)
	defer c.Kill()
	res, err := measureScale(ctx, c, profile, count)
	label := fmt.Sprintf("scale %d nodes, %s", count, profile)
	if err != nil {
		return nil, err
	}
	join := fmt.Sprintf("never within %v: %d node pairs missing", scaleJoinBound, res.missing)
	if res.join > 0 {
		join = fmt.Sprintf("%.2f s", res.join.Seconds())
	}
	crash := "not dropped everywhere: " + res.crashWhy
	if res.crash > 0 {
		crash = fmt.Sprintf("%.2f s", res.crash.Seconds())
	}
	rows := []row{
		{measurement: fmt.Sprintf("%s: all joined (started in %.1f s) → every node has every instance", label, res.startedIn.Seconds()), ringman: join,
			goal: fmt.Sprintf("≤ %.0f s", scaleJoinGoal.Seconds()), met: yesNo(res.join > 0 && res.join <= scaleJoinGoal)},
		{measurement: fmt.Sprintf("%s: false \"node failed\" in %v idle", label, scaleIdle), ringman: strconv.Itoa(res.failed),
			goal: "0", met: yesNo(res.failed == 0)},
		{measurement: label + ": kill -9 → out of every survivor's ring", ringman: crash},
		{measurement: label + ": idle CPU per node (median)", ringman: fmt.Sprintf("%.2f%% of a core", 100*res.cpu)},
		{measurement: label + ": RSS per node (median)", ringman: fmt.Sprintf("%.1f MiB", res.rssMiB)},
	}
	if count == 50 {
		rows[2].goal = fmt.Sprintf("≤ %.0f s", scaleCrashGoal.Seconds())
		rows[2].met = yesNo(res.crash > 0 && res.crash <= scaleCrashGoal)
	}
	progress("scale: %d nodes, %s: join %s, %d false failures, crash %s, CPU %.2f%%, RSS %.1f MiB (processes started in %v)",
		count, profile, join, res.failed, crash, 100*res.cpu, res.rssMiB, res.startedIn.Round(time.Millisecond))
	return rows, nil
}

func measureScale(ctx context.Context, c *cluster.Cluster, profile string, count int) (scaleResult, error) {
	var res scaleResult
	args := []string{"--profile", profile}
	seedPort, err := cluster.FreePort()
	if err != nil {
		return res, err
	}
	seed, err := c.Start(ctx, cluster.NodeConfig{Name: "n1", Services: []string{fmt.Sprintf("web=127.0.0.1:%d", seedPort)}, Args: args})
	if err != nil {
		return res, fmt.Errorf("start n1: %w\n%s", err, seed.LogTail(20))
	}
	ports, err := cluster.FreePorts(count - 1)
	if err != nil {
		return res, err
	}
	nodes := make([]*cluster.Node, count)
	nodes[0] = seed
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, scaleStarters)
	errs := make([]error, count)
	for i := 1; i < count; i++ {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			n, err := c.Start(ctx, cluster.NodeConfig{
				Name:     fmt.Sprintf("n%d", i+1),
				Services: []string{fmt.Sprintf("web=127.0.0.1:%d", ports[i-1])},
				Join:     []string{seed.GossipAddr},
				Args:     args,
			})
			nodes[i] = n
			if err != nil {
				errs[i] = fmt.Errorf("start n%d: %w\n%s", i+1, err, n.LogTail(20))
			}
		})
	}
	wg.Wait()
	res.startedIn = time.Since(start)
	for _, err := range errs {
		if err != nil {
			return res, err
		}
	}
	want := make([]string, count)
	for i, n := range nodes {
		want[i] = n.Instance()
	}
	slices.Sort(want)

	// Converged: one sweep in which every node lists every instance.
	jctx, cancel := context.WithTimeout(ctx, scaleJoinBound)
	err = cluster.Poll(jctx, scalePoll, "every node has every instance", func() (bool, string) {
		missing := 0
		for _, n := range nodes {
			got, err := n.RingMembers(jctx)
			if err != nil {
				return false, fmt.Sprintf("%s: %v", n.Name, err)
			}
			missing += count - len(got)
		}
		res.missing = missing
		return missing == 0, fmt.Sprintf("%d node pairs missing", missing)
	})
	cancel()
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if err == nil {
		res.join = time.Since(start) - res.startedIn
	} else {
		progress("scale: %v", err)
	}

	// Idle: CPU, RSS and false failures over a window.
	before := failedLines(nodes)
	cpu0 := cpuTimes(nodes)
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(scaleIdle): // a measurement window, not a wait for a condition
	}
	window := time.Since(t0).Seconds()
	cpu1 := cpuTimes(nodes)
	var shares, rss []float64
	for i, n := range nodes {
		if cpu0[i] >= 0 && cpu1[i] >= 0 {
			shares = append(shares, (cpu1[i]-cpu0[i])/window)
		}
		if r := rssMiB(n.Pid()); r > 0 {
			rss = append(rss, r)
		}
	}
	res.cpu, res.rssMiB = median(shares), median(rss)
	res.failed = failedLines(nodes) - before
	if res.join == 0 {
		res.crashWhy = "not measured: never converged"
		return res, nil
	}

	// Crash: kill -9 the last node, time until no survivor lists it.
	victim := nodes[count-1]
	survivors := nodes[:count-1]
	killed := time.Now()
	if err := victim.Signal(syscall.SIGKILL); err != nil {
		return res, err
	}
	cctx, cancel := context.WithTimeout(ctx, scaleJoinBound)
	defer cancel()
	dropped := make([]bool, len(survivors))
	err = cluster.Poll(cctx, scalePoll/4, victim.Instance()+" out of every survivor's ring", func() (bool, string) {
		left := 0
		for i, n := range survivors {
			if dropped[i] {
				continue
			}
			got, err := n.RingMembers(cctx)
			if err == nil && !slices.Contains(got, victim.Instance()) {
				dropped[i] = true
				continue
			}
			left++
		}
		return left == 0, fmt.Sprintf("%d survivors still list it", left)
	})
	if err != nil {
		res.crashWhy = err.Error()
	} else {
		res.crash = time.Since(killed)
	}
	return res, nil
}

// failedLines counts the "node failed" lines in every node's log.
func failedLines(nodes []*cluster.Node) int {
	total := 0
	for _, n := range nodes {
		b, err := os.ReadFile(n.LogPath)
		if err == nil {
			total += bytes.Count(b, []byte(failedLine))
		}
	}
	return total
}

// cpuTimes returns each node's user+system CPU seconds so far (-1 when
// unknown).
func cpuTimes(nodes []*cluster.Node) []float64 {
	out := make([]float64, len(nodes))
	for i, n := range nodes {
		out[i] = -1
		if st, err := procStat(n.Pid()); err == nil {
			out[i] = st.cpu.Seconds()
		}
	}
	return out
}

// rssMiB returns a process's resident memory in MiB, or 0.
func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err == nil {
				return kb / 1024
			}
		}
	}
	return 0
}
