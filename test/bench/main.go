// Command bench measures ringman on this machine and prints one table of
// ratios (`make bench`):
//
//   - the in-process ring lookups and rebuilds (go test -bench ./ring/),
//     against their goals and against the library's own LocateKey;
//   - RESP GET throughput of one ringman node against redis-server, with
//     redis-benchmark, unpipelined and pipelined, alternating runs, medians;
//   - how long a 3-process cluster (fast profile) takes to drop a node that
//     was killed (kill -9) and one that left (SIGTERM);
//   - host overrides: Router.Lookup with 0, 1,000 and 100,000 overrides
//     (go test -bench ./router/), how long a bulk import of 16,500 on one
//     node of 3 takes to be on all 3, a bulk import of 100,000 through one
//     node's HTTP API, and how long a node that joins it takes to have them;
//   - nginx: wrk through nginx with static proxy_pass, the built-in
//     `hash $request_uri consistent`, and ringman's lua.conf and
//     auth_request.conf over 3 ringman nodes, alternating runs, medians;
//     the native module's module.conf and set_backend, when it is built;
//   - callgrind: instructions per request of one nginx with the built-in
//     hash, lua.conf, module.conf and set_backend (valgrind);
//   - scale, only when asked for (`make scale`, -only scale): 50 and 100
//     processes per gossip profile: join to converged, false failures while
//     idle, idle CPU and RSS per node, kill -9 to dropped everywhere.
//
// Figures are medians on a shared, noisy machine: trust ratios more than
// absolute numbers. Progress goes to stderr, the table to stdout. Every
// process it starts is stopped on return, error, panic or interrupt.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"ringman/test/cluster"
)

type options struct {
	bin          string
	total        time.Duration
	rounds       int
	requests1    int
	requests16   int
	clients      int
	reps         int
	benchtime    string
	only         string
	callgrindOut string
	// scaleNodes and scaleProfiles are the cluster sizes and gossip
	// profiles of the scale section (`make scale`).
	scaleNodes    string
	scaleProfiles string
}

func main() {
	os.Exit(run())
}

func run() int {
	var o options
	flag.StringVar(&o.bin, "bin", "", "ringman binary to measure (default: build ./cmd/ringman)")
	flag.DurationVar(&o.total, "timeout", 590*time.Second, "bound on the whole run")
	flag.IntVar(&o.rounds, "rounds", 3, "redis-benchmark runs per server and pipeline depth (median)")
	flag.IntVar(&o.requests1, "n1", 100_000, "requests per unpipelined redis-benchmark run")
	flag.IntVar(&o.requests16, "n16", 1_000_000, "requests per pipelined (-P 16) redis-benchmark run")
	flag.IntVar(&o.clients, "c", 50, "redis-benchmark connections")
	flag.IntVar(&o.reps, "reps", 3, "crash/leave detection repetitions (median)")
	flag.StringVar(&o.benchtime, "benchtime", "500ms", "go test -benchtime of the ring and override lookup benchmarks")
	flag.StringVar(&o.only, "only", "ring,resp,detect,overrides,nginx,callgrind", "sections to run, comma-separated")
	flag.StringVar(&o.scaleNodes, "scale-nodes", "50,100", "cluster sizes of the scale section, comma-separated")
	flag.StringVar(&o.scaleProfiles, "scale-profiles", "fast,lan", "gossip profiles of the scale section, comma-separated")
	flag.StringVar(&o.callgrindOut, "callgrind-out", "", "directory to keep the callgrind section's request dumps in, for callgrind_annotate")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench: unexpected arguments %q\n", flag.Args())
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.total)
	defer cancel()

	var cl cleanups
	defer cl.run() // also runs when a panic unwinds through here

	tmp, err := os.MkdirTemp("", "ringman-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	cl.add(func() { os.RemoveAll(tmp) })

	if o.bin == "" {
		progress("building ./cmd/ringman")
		if o.bin, err = cluster.Build(ctx, tmp); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
	}
	if o.bin, err = filepath.Abs(o.bin); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if _, err := os.Stat(o.bin); err != nil {
		fmt.Fprintf(os.Stderr, "bench: -bin: %v (run `make build` first)\n", err)
		return 1
	}

	var t table
	failed := false
	sections := []struct {
		name string
		run  func(context.Context, options, string, *cleanups) ([]row, error)
	}{
		{"ring", ringRows},
		{"resp", respRows},
		{"detect", detectRows},
		{"overrides", overrideRows},
		{"nginx", nginxRows},
		{"callgrind", callgrindRows},
		{"scale", scaleRows}, // not in the default -only: `make scale`
	}
	for _, s := range sections {
		if !slices.Contains(strings.Split(o.only, ","), s.name) {
			continue
		}
		dir := filepath.Join(tmp, s.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		rows, err := s.run(ctx, o, dir, &cl)
		t.rows = append(t.rows, rows...)
		if err != nil {
			failed = true
			progress("%s: %v", s.name, err)
			what := firstLine(err.Error())
			if ctx.Err() != nil {
				what = "stopped: " + context.Cause(ctx).Error()
			}
			t.rows = append(t.rows, row{measurement: s.name + ": did not complete", ringman: what, met: "ERROR"})
		}
		if ctx.Err() != nil {
			break
		}
	}
	fmt.Printf("ringman bench: %s, %d CPUs, %s, %s, %s\n", o.bin, runtime.NumCPU(), runtime.Version(), toolVersion("redis-server", "--version"), time.Now().Format(time.RFC3339))
	t.print(os.Stdout)
	if failed || ctx.Err() != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(os.Stderr, "bench: stopped early: %v\n", context.Cause(ctx))
		}
		return 1
	}
	return 0
}

// cleanups are run last-in first-out, once.
type cleanups struct {
	mu  sync.Mutex
	fns []func()
}

func (c *cleanups) add(fn func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fns = append(c.fns, fn)
}

func (c *cleanups) run() {
	c.mu.Lock()
	fns := c.fns
	c.fns = nil
	c.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// row is one line of the table. met is "yes", "NO", "" (no goal) or "ERROR".
type row struct {
	measurement, ringman, peer, ratio, goal, met string
}

type table struct{ rows []row }

func (t *table) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tringman\tpeer\tratio\tgoal\tmet?")
	fmt.Fprintln(tw, "-----------\t-------\t----\t-----\t----\t----")
	for _, r := range t.rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.measurement, dash(r.ringman), dash(r.peer), dash(r.ratio), dash(r.goal), dash(r.met))
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// toolVersion returns the first line of `name args...`, or "name: missing".
func toolVersion(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return name + ": " + err.Error()
	}
	return strings.TrimSpace(firstLine(string(out)))
}

// median of xs (which it sorts).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

// groupCommand returns a command in its own process group that is killed,
// with all its children, when ctx ends: `go test` runs the test binary as a
// child that would otherwise outlive it.
func groupCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = cluster.SysProcAttr()
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}
