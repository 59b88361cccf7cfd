package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"ringman/test/cluster"
)

// Goals: a killed node's instance leaves every ring "within
// about a second"; a graceful leave is announced, so it should be faster
// (FINDINGS: 0.05–0.15 s with the tuned timings).
const (
	crashGoal = 1500 * time.Millisecond
	leaveGoal = 500 * time.Millisecond
	// detectPoll is how often the survivors' RING.MEMBERS is read.
	detectPoll = 10 * time.Millisecond
	// detectBound bounds each wait for a survivor to drop an instance.
	detectBound = 15 * time.Second
)

// detectRows times, on fresh 3-process clusters (fast profile), how long the
// survivors take to drop the instance of a node killed with kill -9, and
// then the one survivor left to drop a node that got SIGTERM.
func detectRows(ctx context.Context, o options, dir string, cl *cleanups) ([]row, error) {
	var crash, leave []float64
	for rep := range o.reps {
		c, l, err := detectOnce(ctx, o, filepath.Join(dir, fmt.Sprintf("rep%d", rep+1)), cl)
		if err != nil {
			return nil, fmt.Errorf("repetition %d: %w", rep+1, err)
		}
		progress("detect: repetition %d: kill -9 dropped by both survivors after %v, SIGTERM dropped after %v", rep+1, c.Round(time.Millisecond), l.Round(time.Millisecond))
		crash = append(crash, c.Seconds())
		leave = append(leave, l.Seconds())
	}
	mc, ml := median(crash), median(leave)
	return []row{
		{
			measurement: fmt.Sprintf("detect crash: kill -9 → out of 2 survivors' rings (median of %d)", len(crash)),
			ringman:     fmt.Sprintf("%.3f s", mc),
			goal:        fmt.Sprintf("≤ %.1f s", crashGoal.Seconds()),
			met:         yesNo(mc <= crashGoal.Seconds()),
		},
		{
			measurement: fmt.Sprintf("detect leave: SIGTERM → out of the survivor's ring (median of %d)", len(leave)),
			ringman:     fmt.Sprintf("%.3f s", ml),
			goal:        fmt.Sprintf("≤ %.1f s", leaveGoal.Seconds()),
			met:         yesNo(ml <= leaveGoal.Seconds()),
		},
	}, nil
}

func detectOnce(ctx context.Context, o options, dir string, cl *cleanups) (crash, leave time.Duration, err error) {
	c := cluster.New(o.bin, dir)
	cl.add(c.Kill)
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\nnode logs:\n%s", err, c.Logs())
		}
		c.Kill()
	}()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, 0, err
	}
	nodes, err := c.StartRing(ctx, "node", "web", 3)
	if err != nil {
		return 0, 0, err
	}
	all := []string{nodes[0].Instance(), nodes[1].Instance(), nodes[2].Instance()}
	wctx, cancel := context.WithTimeout(ctx, detectBound)
	err = cluster.WaitInstances(wctx, nodes, all)
	cancel()
	if err != nil {
		return 0, 0, err
	}

	victim := nodes[2]
	start := time.Now()
	if err := victim.Signal(syscall.SIGKILL); err != nil {
		return 0, 0, err
	}
	if crash, err = timeDrop(ctx, start, nodes[:2], victim.Instance()); err != nil {
		return 0, 0, fmt.Errorf("after kill -9 of %s: %w", victim.Name, err)
	}

	leaver := nodes[1]
	start = time.Now()
	if err := leaver.Signal(syscall.SIGTERM); err != nil {
		return 0, 0, err
	}
	if leave, err = timeDrop(ctx, start, nodes[:1], leaver.Instance()); err != nil {
		return 0, 0, fmt.Errorf("after SIGTERM to %s: %w", leaver.Name, err)
	}
	if !leaver.Wait(cluster.StopTimeout) || leaver.ExitCode() != 0 {
		return 0, 0, fmt.Errorf("%s after SIGTERM: %s, want exit status 0 within %v", leaver.Name, leaver.ExitState(), cluster.StopTimeout)
	}
	return crash, leave, nil
}

// timeDrop polls RING.MEMBERS of every observer until none lists instance,
// and returns the time from start until the last one stopped listing it.
func timeDrop(ctx context.Context, start time.Time, observers []*cluster.Node, instance string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, detectBound)
	defer cancel()
	dropped := map[string]time.Duration{}
	var last time.Duration
	err := cluster.Poll(ctx, detectPoll, instance+" out of every observer's ring", func() (bool, string) {
		for _, n := range observers {
			if _, ok := dropped[n.Name]; ok {
				continue
			}
			got, err := n.RingMembers(ctx)
			if err != nil {
				return false, fmt.Sprintf("%s: RING.MEMBERS: %v", n.Name, err)
			}
			if slices.Contains(got, instance) {
				return false, fmt.Sprintf("%s still lists it: %v", n.Name, got)
			}
			dropped[n.Name] = time.Since(start)
			last = max(last, dropped[n.Name])
		}
		return true, ""
	})
	return last, err
}
