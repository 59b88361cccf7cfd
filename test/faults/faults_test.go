package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"ringman/discovery"
	"ringman/httpapi"
	"ringman/test/cluster"
)

// The fast profile's timings, from which the detection windows are derived:
// read from discovery, which reads them from the memberlist configuration
// a node of that profile runs.
var (
	fastProfile    = mustProfile("fast")
	probeInterval  = fastProfile.ProbeInterval
	suspicionMult  = fastProfile.SuspicionMult
	gossipInterval = fastProfile.GossipInterval
	pushPull       = fastProfile.PushPullInterval
	awarenessMax   = fastProfile.AwarenessMaxMultiplier
)

func mustProfile(name string) discovery.Profile {
	p, err := discovery.LookupProfile(name)
	if err != nil {
		panic(err) // a profile the suite was written for is gone: nothing here can run
	}
	return p
}

// detectWindow is how long a node that can no longer reach lost of the
// other members-1 nodes (they crashed, hang, or are cut off from it) may
// still route to them: twice the worst case of memberlist's failure
// detection with the fast profile.
//
//   - the node probes the others in turn, one per ProbeInterval tick, plus
//     one interval for the phase at which the fault happened;
//   - a failed probe lasts its probe interval (ProbeTimeout, then indirect
//     pings through IndirectChecks = 3 members and a TCP ping), and the next
//     probe waits for the next tick. Lifeguard scales that interval by the
//     node's health score + 1, and each failed probe adds to the score one
//     for every helper that sent no nack (up to 3; the multiplier stops at
//     AwarenessMaxMultiplier = 8). Helpers that can reach the asker nack, so
//     after a crash the score stays low; a node cut off from everyone gets no
//     nack at all and slows down: 1, 4, 7, 8 intervals for its successive
//     failed probes, each plus the wait for the next tick;
//   - the node stays suspect for SuspicionMult * max(1, log10(members))
//     intervals: memberlist waits for confirmations only when SuspicionMult
//     > 2 (k = SuspicionMult - 2), so the minimum applies;
//   - the dead message reaches everyone in a few gossip intervals, and the
//     ring is rebuilt in well under a millisecond.
//
// A crash seen from 5 nodes: 2 x (0.2 + 0.6 + 0.4 + 0.4 + 0.15) = 3.5 s; a
// node isolated from the 4 others: 2 x (0.2 + (2+5+8+9) x 0.2 + 0.55) = 11.1 s.
func detectWindow(members, lost int) time.Duration {
	probes := probeInterval + time.Duration(members-1-lost)*probeInterval
	for i := range lost {
		probes += time.Duration(min(1+3*i, awarenessMax)+1) * probeInterval
	}
	suspicion := time.Duration(float64(suspicionMult) * math.Max(1, math.Log10(float64(members))) * float64(probeInterval))
	return 2 * (probes + suspicion + 3*gossipInterval)
}

// leaveWindow is the same for a graceful stop: on SIGTERM the node first
// gossips its draining flag (a metadata update, pushed to 3 random members
// every GossipInterval), which takes its instances out of every ring before
// it leaves. A few gossip rounds; 1 s leaves room for a busy machine.
const leaveWindow = time.Second

// Scenario lengths: the issue's, and for the isolation, long enough that
// memberlist has forgotten the node (it stops gossiping to a dead node after
// GossipToTheDeadTime and drops it at its next probe round) on both sides.
const (
	holdAfter    = 2 * time.Second // observation past a detection window
	stopFor      = 10 * time.Second
	partitionFor = 30 * time.Second
	// isolateFor: the isolated node's detection (up to ~5.6 s, see
	// detectWindow) + GossipToTheDeadTime (5 s) + one probe round is ~11 s.
	isolateFor     = 15 * time.Second
	churnFor       = 60 * time.Second
	churnEvery     = time.Second
	lossFor        = 30 * time.Second
	convergeWithin = 60 * time.Second // a bound, not a measurement: reconnects run every 10 s
	identicalKeys  = 10_000
	coreNodes      = 5
	churnNodes     = 4
)

// suite is the running cluster and what the test expects of it.
type suite struct {
	ctx    context.Context
	lab    *lab
	dir    string
	stalls *stalls
	truth  *truth
	load   *load

	mu     sync.Mutex
	core   []*node
	extras []*node
	// want is every acknowledged override write as it must end on every
	// node (last writer wins); gone are hosts whose last write was a delete.
	want map[string]string
	gone map[string]bool

	rows []*row
}

// row is one line of the table.
type row struct {
	num       int
	name      string
	held      []string
	failed    []string
	converge  []string
	notes     []string // measurements for the report
	mechanism string
	lookups   int64
	wrong     int64
	errors    int64
	panics    int
	lost      int
	exits     []string
	took      time.Duration
}

func TestFaults(t *testing.T) {
	requireLab(t)
	started := time.Now()
	ctx := t.Context()
	l, err := newLab(ctx)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	st := &stalls{}
	go st.run(ctx)
	s := &suite{ctx: ctx, lab: l, dir: t.TempDir(), stalls: st, truth: newTruth(st), want: map[string]string{}, gone: map[string]bool{}}
	t.Cleanup(func() {
		if s.load != nil {
			s.load.close()
		}
		for _, n := range s.all() {
			n.close()
		}
		if t.Failed() {
			for _, n := range s.all() {
				t.Logf("----- %s (%s) -----\n%s", n.name, n.logPath, n.logTail(40))
			}
		}
		// On failure (or with RINGMAN_FAULTS_KEEP_LOGS=1) the whole logs
		// outlive the test's temporary directory.
		if t.Failed() || os.Getenv("RINGMAN_FAULTS_KEEP_LOGS") == "1" {
			if keep, err := os.MkdirTemp("", "ringman-faults-logs-"); err == nil {
				for _, n := range s.all() {
					if raw, err := os.ReadFile(n.logPath); err == nil {
						os.WriteFile(filepath.Join(keep, n.name+".log"), raw, 0o644)
					}
				}
				t.Logf("node logs kept in %s", keep)
			}
		}
		if err := l.Close(); err != nil {
			t.Errorf("removing the lab: %v", err)
		}
		spaces, links := leftovers(context.Background())
		if len(spaces[l.id]) > 0 || len(links[l.id]) > 0 {
			t.Errorf("lab %s left namespaces %v and links %v", l.id, spaces[l.id], links[l.id])
		}
	})
	if err := s.startCore(ctx); err != nil {
		t.Fatal(err)
	}
	s.load = startLoad(ctx, s.truth, s.all)

	scenarios := []struct {
		slug, name, mechanism string
		run                   func(*testing.T, *row)
	}{
		{"kill", "kill -9, restart (same name, data dir)", mechKill, s.killRestart},
		{"sigstop", "SIGSTOP 10 s, SIGCONT", mechStop, s.hang},
		{"partition", "partition 2|3 for 30 s, conflicting writes, heal", mechPartition, s.partition},
		{"isolate", "isolated until forgotten (15 s), heal", mechIsolate, s.isolate},
		{"rolling", "rolling restart of all 5 under load", mechRolling, s.rolling},
		{"churn", "churn: a join or leave every 1 s for 60 s", mechChurn, s.churn},
		{"readdress", "restart with the same name, new address", mechReaddress, s.readdress},
		{"loss", "10% packet loss on one link for 30 s", mechLoss, s.loss},
	}
	for i, sc := range scenarios {
		r := &row{num: i + 1, name: sc.name, mechanism: sc.mechanism}
		t.Run(fmt.Sprintf("%d-%s", i+1, sc.slug), func(t *testing.T) {
			s.rows = append(s.rows, r)
			s.scenario(t, r, sc.run)
		})
	}
	table := renderTable(s.rows)
	fmt.Printf("\nringman fault suite (%d nodes, fast profile, %s):\n%s\n", coreNodes, time.Since(started).Round(time.Second), table)
	if path := os.Getenv("RINGMAN_FAULTS_REPORT"); path != "" {
		if err := writeReport(path, s.rows, time.Since(started)); err != nil {
			t.Errorf("report: %v", err)
		}
	}
}

// scenario runs one: from a converged cluster of the five, counting what
// the load generator and the logs say, ending converged again.
func (s *suite) scenario(t *testing.T, r *row, run func(*testing.T, *row)) {
	start := time.Now()
	offsets := map[*node]int64{}
	if err := s.baseline(); err != nil {
		r.failed = append(r.failed, "cluster not healthy before the scenario")
		t.Fatalf("before the scenario: %v", err)
	}
	for _, n := range s.all() {
		_, offsets[n] = n.logSince(0)
	}
	tl := s.load.begin()
	began := time.Now()
	run(t, r)
	// What every scenario must end with.
	since := time.Now()
	if _, err := s.converged(since); err != nil {
		s.fail(t, r, "converged", err)
	} else if err := s.identical(); err != nil {
		s.fail(t, r, "identical answers", err)
	} else {
		s.mu.Lock()
		overrides := len(s.want)
		s.mu.Unlock()
		entries := fmt.Sprintf("%d entries", overrides)
		if overrides == 1 {
			entries = "1 entry"
		}
		r.held = append(r.held, fmt.Sprintf("identical answers for %s keys and identical override tables (%s) on every node", thousands(identicalKeys), entries))
	}
	r.lost = s.lostWrites()
	if r.lost > 0 {
		s.fail(t, r, "no acknowledged write lost", fmt.Errorf("%d acknowledged override writes missing or overwritten on some node", r.lost))
	}
	r.lookups, r.wrong, r.errors = tl.lookups.Load(), tl.wrong.Load(), tl.errors.Load()
	if stale := time.Duration(tl.stale.Load()); stale > 0 {
		r.notes = append(r.notes, fmt.Sprintf("last answer naming a failed instance %s after the fault", secs(stale)))
	}
	r.notes = append(r.notes, fmt.Sprintf("slowest lookup %v", time.Duration(tl.slowest.Load()).Round(time.Millisecond)))
	if stalled, longest := s.stalls.since(began); stalled >= 100*time.Millisecond {
		r.notes = append(r.notes, fmt.Sprintf("the test process could not run for %s in all (busy machine), %v at most at once", secs(stalled), longest.Round(time.Millisecond)))
	}
	tl.mu.Lock()
	wrongSeen, errorsSeen := slices.Clone(tl.wrongSeen), slices.Clone(tl.errorsSeen)
	tl.mu.Unlock()
	if r.wrong > 0 {
		s.fail(t, r, "no wrong answer", fmt.Errorf("%d of %d answers named an instance that was down or cut off past its window:\n%s", r.wrong, r.lookups, strings.Join(wrongSeen, "\n")))
	}
	if r.errors > 0 {
		s.fail(t, r, "no lookup error", fmt.Errorf("%d lookups to serving nodes failed:\n%s", r.errors, strings.Join(errorsSeen, "\n")))
	}
	panicLine := regexp.MustCompile(`(?i)panic|fatal error:`)
	for _, n := range s.all() {
		text, _ := n.logSince(offsets[n])
		for _, line := range strings.Split(text, "\n") {
			if panicLine.MatchString(line) {
				r.panics++
				t.Errorf("%s logged: %s", n.name, line)
			}
		}
		for _, e := range n.takeSurprises() {
			r.exits = append(r.exits, e)
			t.Errorf("unexpected exit: %s", e)
		}
	}
	for _, n := range s.coreNodes() {
		if !n.running() {
			r.exits = append(r.exits, n.name+" not running: "+n.exitState())
			t.Errorf("%s is not running at the end: %s", n.name, n.exitState())
		}
	}
	if r.panics == 0 && len(r.exits) == 0 {
		r.held = append(r.held, "no panic, no exit the test did not cause")
	}
	if r.wrong == 0 && r.errors == 0 {
		r.held = append(r.held, fmt.Sprintf("%s lookups, none wrong", thousands(r.lookups)))
	}
	r.took = time.Since(start)
	t.Logf("scenario %d took %v; converge: %s; %s", r.num, r.took.Round(time.Second), strings.Join(r.converge, ", "), strings.Join(r.notes, "; "))
}

func (s *suite) fail(t *testing.T, r *row, what string, err error) {
	t.Helper()
	t.Errorf("%s: %v", what, err)
	r.failed = append(r.failed, what)
}

// check records err (nil: held) for what.
func (s *suite) check(t *testing.T, r *row, what string, err error) bool {
	t.Helper()
	if err != nil {
		s.fail(t, r, what, err)
		return false
	}
	r.held = append(r.held, what)
	return true
}

func (s *suite) all() []*node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(slices.Clone(s.core), s.extras...)
}

func (s *suite) coreNodes() []*node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.core)
}

func (s *suite) running() []*node {
	var out []*node
	for _, n := range s.all() {
		if n.running() {
			out = append(out, n)
		}
	}
	return out
}

// startCore starts n1..n5; n2..n5 join n1.
func (s *suite) startCore(ctx context.Context) error {
	for i := 1; i <= coreNodes; i++ {
		ns, err := s.lab.addNamespace(ctx, i)
		if err != nil {
			return err
		}
		n, err := newNode(fmt.Sprintf("n%d", i), true, ns, s.dir, s.truth)
		if err != nil {
			return err
		}
		if i > 1 {
			n.seeds = []string{s.core[0].gossipAddr()}
		}
		s.mu.Lock()
		s.core = append(s.core, n)
		s.mu.Unlock()
		if err := n.start(ctx); err != nil {
			return err
		}
	}
	_, err := s.converged(time.Now())
	return err
}

// baseline heals every fault, makes sure the five run and no extra does,
// and waits until they agree.
func (s *suite) baseline() error {
	// Whatever a failed scenario left open: the five are live from now on.
	var insts []string
	for _, n := range s.coreNodes() {
		insts = append(insts, n.instance())
	}
	s.truth.endFor(insts)
	for _, n := range s.all() {
		if err := n.ns.heal(s.ctx); err != nil {
			return err
		}
		if !n.core && n.running() {
			if _, err := n.stop(); err != nil {
				return err
			}
		}
	}
	for _, n := range s.coreNodes() {
		if !n.running() {
			n.seeds = nil
			if err := n.start(s.ctx); err != nil {
				return err
			}
		}
	}
	_, err := s.converged(time.Now())
	return err
}

// instances returns the instances of nodes, sorted.
func instances(nodes []*node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.instance())
	}
	slices.Sort(out)
	return out
}

func names(nodes []*node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.name)
	}
	return out
}

// waitRing polls RING.MEMBERS of askers until each has exactly the
// instances of want, and returns the time since since.
func (s *suite) waitRing(since time.Time, askers, want []*node, what string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(s.ctx, convergeWithin)
	defer cancel()
	insts := instances(want)
	err := cluster.Poll(ctx, 20*time.Millisecond, what, func() (bool, string) {
		for _, n := range askers {
			got, err := n.ringMembers(ctx)
			if err != nil {
				return false, err.Error()
			}
			if !slices.Equal(got, insts) {
				return false, fmt.Sprintf("%s has %v, want %v", n.name, got, insts)
			}
		}
		return true, ""
	})
	return time.Since(since), err
}

// converged waits until every running node has every running node's
// instance in its ring and the same override table, the one the test
// expects; it returns the time since since.
func (s *suite) converged(since time.Time) (time.Duration, error) {
	nodes := s.running()
	if _, err := s.waitRing(since, nodes, nodes, fmt.Sprintf("every ring = the %d running nodes", len(nodes))); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(s.ctx, convergeWithin)
	defer cancel()
	err := cluster.Poll(ctx, 50*time.Millisecond, "every node has the expected override table", func() (bool, string) {
		var first []httpapi.Override
		for i, n := range nodes {
			got, err := n.API().Hosts(ctx)
			if err != nil {
				return false, fmt.Sprintf("%s: GET /entries.json: %v", n.name, err)
			}
			if why := s.tableMismatch(got); why != "" {
				return false, fmt.Sprintf("%s: %s", n.name, why)
			}
			if i == 0 {
				first = got
			} else if !slices.EqualFunc(first, got, sameOverride) {
				return false, fmt.Sprintf("%s and %s differ: %v vs %v", nodes[0].name, n.name, first, got)
			}
		}
		return true, ""
	})
	return time.Since(since), err
}

func sameOverride(a, b httpapi.Override) bool {
	return a.Host == b.Host && a.Backend == b.Backend && a.Version == b.Version && a.Node == b.Node
}

// tableMismatch compares a node's overrides with what the test expects.
func (s *suite) tableMismatch(got []httpapi.Override) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	have := map[string]string{}
	for _, o := range got {
		have[o.Host] = o.Backend
	}
	for host, backend := range s.want {
		if have[host] != backend {
			return fmt.Sprintf("%s -> %q, want %q", host, have[host], backend)
		}
	}
	for host := range s.gone {
		if b, ok := have[host]; ok {
			return fmt.Sprintf("%s -> %q, want it deleted", host, b)
		}
	}
	return ""
}

// lostWrites counts the expected overrides some running node does not have
// as expected.
func (s *suite) lostWrites() int {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	bad := map[string]bool{}
	for _, n := range s.running() {
		got, err := n.API().Hosts(ctx)
		if err != nil {
			continue // reported by converged
		}
		have := map[string]string{}
		for _, o := range got {
			have[o.Host] = o.Backend
		}
		s.mu.Lock()
		for host, backend := range s.want {
			if have[host] != backend {
				bad[host] = true
			}
		}
		for host := range s.gone {
			if _, ok := have[host]; ok {
				bad[host] = true
			}
		}
		s.mu.Unlock()
	}
	return len(bad)
}

// identical asks every running node for the same keys (ring keys, and a
// key under each expected override's host) and wants the same answers, each
// a live instance (or the override's backend); it then fetches a few keys
// from the backends named and wants the named node's backend to answer.
func (s *suite) identical() error {
	ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
	defer cancel()
	nodes := s.running()
	keys := make([]string, 0, identicalKeys+len(s.want))
	for i := range identicalKeys {
		keys = append(keys, fmt.Sprintf("/identical/%d", i))
	}
	s.mu.Lock()
	hosts := make([]string, 0, len(s.want))
	for h := range s.want {
		hosts = append(hosts, h)
	}
	want := cloneMap(s.want)
	s.mu.Unlock()
	slices.Sort(hosts)
	for _, h := range hosts {
		keys = append(keys, h+"/identical")
	}
	live := map[string]*node{}
	for _, n := range nodes {
		live[n.instance()] = n
	}
	var first []string
	for _, n := range nodes {
		got, err := n.lookups(ctx, keys)
		if err != nil {
			return err
		}
		for i, k := range keys {
			if i < identicalKeys {
				if live[got[i]] == nil {
					return fmt.Errorf("%s answered %q for %s: not a live instance", n.name, got[i], k)
				}
			} else if h := hosts[i-identicalKeys]; got[i] != want[h] {
				return fmt.Errorf("%s answered %q for %s: want the override %q", n.name, got[i], k, want[h])
			}
		}
		if first == nil {
			first = got
			continue
		}
		diff := 0
		example := ""
		for i := range keys {
			if got[i] != first[i] {
				if diff == 0 {
					example = fmt.Sprintf("%s: %s says %s, %s says %s", keys[i], nodes[0].name, first[i], n.name, got[i])
				}
				diff++
			}
		}
		if diff > 0 {
			return fmt.Errorf("%d of %d keys answered differently, e.g. %s", diff, len(keys), example)
		}
	}
	// The instances answer, and are who the ring says.
	hc := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < identicalKeys; i += identicalKeys / 20 {
		owner := live[first[i]]
		resp, err := hc.Get("http://" + first[i] + keys[i])
		if err != nil {
			return fmt.Errorf("backend %s for %s: %w", first[i], keys[i], err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		if wantBody := owner.name + " " + keys[i] + "\n"; string(body) != wantBody {
			return fmt.Errorf("backend %s for %s answered %q, want %q", first[i], keys[i], body, wantBody)
		}
	}
	return nil
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// setOverride writes host -> backend through n's API and records it as
// acknowledged.
func (s *suite) setOverride(n *node, host, backend string) (httpapi.Override, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	o, err := n.API().SetHost(ctx, host, backend)
	if err != nil {
		return o, fmt.Errorf("POST /entries.json %s -> %s on %s: %w", host, backend, n.name, err)
	}
	s.mu.Lock()
	s.want[host] = backend
	delete(s.gone, host)
	s.mu.Unlock()
	return o, nil
}

func (s *suite) deleteOverride(n *node, host string) error {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	if _, err := n.API().DeleteHost(ctx, host); err != nil {
		return fmt.Errorf("DELETE /entries/%s.json on %s: %w", host, n.name, err)
	}
	s.mu.Lock()
	delete(s.want, host)
	s.gone[host] = true
	s.mu.Unlock()
	return nil
}

// waitOverride polls n until its override of host is backend ("" for none).
func (s *suite) waitOverride(n *node, host, backend string) error {
	ctx, cancel := context.WithTimeout(s.ctx, 20*time.Second)
	defer cancel()
	return cluster.Poll(ctx, 50*time.Millisecond, fmt.Sprintf("%s: %s -> %q", n.name, host, backend), func() (bool, string) {
		o, err := n.API().Host(ctx, host)
		switch {
		case httpapi.IsNotFound(err):
			return backend == "", "no override"
		case err != nil:
			return false, err.Error()
		}
		return o.Backend == backend, "has " + o.Backend
	})
}

// hold lets the load generator run until the time at; it is the
// observation period of a scenario, not a wait for a condition.
func (s *suite) hold(at time.Time) {
	t := time.NewTimer(time.Until(at))
	defer t.Stop()
	select {
	case <-s.ctx.Done():
	case <-t.C:
	}
}

// thousands formats n as 12,345.
func thousands[T int | int64](n T) string {
	s := strconv.FormatInt(int64(n), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s" }

func without(nodes []*node, skip ...*node) []*node {
	var out []*node
	for _, n := range nodes {
		if !slices.Contains(skip, n) {
			out = append(out, n)
		}
	}
	return out
}

// 1. kill -9 one node, restart it with the same name and data dir.
const mechKill = "SWIM failure detection (probe, indirect probes, suspicion, dead) takes the node out of every ring; " +
	"the override written just before the kill was fsynced to bbolt before the API answered, so the restarted node still has it " +
	"and gossip (push/pull on rejoin, resync of recovered members) spreads it; the restart rejoins through the peers saved in its data file."

func (s *suite) killRestart(t *testing.T, r *row) {
	v := s.core[2]
	others := without(s.coreNodes(), v)
	// Written to the victim, acknowledged, then kill -9 at once: the
	// write must survive in the victim's data file.
	if !s.check(t, r, "write acknowledged just before kill -9", func() error {
		_, err := s.setOverride(v, "killed.example.com", "10.250.0.1:8001")
		return err
	}()) {
		return
	}
	window := detectWindow(coreNodes, 1)
	t0 := time.Now()
	sp := s.truth.bad(v.instance(), nil, window, "was killed (kill -9)")
	if err := v.kill(); err != nil {
		s.fail(t, r, "kill", err)
		return
	}
	out, err := s.waitRing(t0, others, others, "killed node out of every ring")
	if s.check(t, r, fmt.Sprintf("out of every ring in %s (window %s)", secs(out), secs(window)), err) {
		r.converge = append(r.converge, "out "+secs(out))
	}
	s.hold(t0.Add(window + holdAfter))
	v.seeds = nil // rejoin through the saved peers
	s.truth.end(sp)
	t1 := time.Now()
	if err := v.start(s.ctx); err != nil {
		s.fail(t, r, "restart", err)
		return
	}
	back, err := s.converged(t1)
	if s.check(t, r, "restarted node back in every ring, with its write, without --join", err) {
		r.converge = append(r.converge, "back "+secs(back))
	}
}

// 2. SIGSTOP one node for 10 s, then SIGCONT.
const mechStop = "a stopped process answers no probe, so SWIM declares it dead as after a crash; its kernel still accepts " +
	"TCP connections, so the others' reconnect loops (every 10 s) queue their full state exchanges in its backlog, and on " +
	"SIGCONT it answers them at once and is back in every ring (\"reconnected to a failed member\" in the others' logs); " +
	"else it would refute its death or come back through its own push/pull (every 5 s). It never exits."

func (s *suite) hang(t *testing.T, r *row) {
	v := s.core[1]
	others := without(s.coreNodes(), v)
	window := detectWindow(coreNodes, 1)
	t0 := time.Now()
	sp := s.truth.bad(v.instance(), nil, window, "was stopped (SIGSTOP)")
	if err := v.pause(); err != nil {
		s.fail(t, r, "SIGSTOP", err)
		return
	}
	out, err := s.waitRing(t0, others, others, "stopped node out of every ring")
	if s.check(t, r, fmt.Sprintf("out of every ring in %s (window %s)", secs(out), secs(window)), err) {
		r.converge = append(r.converge, "out "+secs(out))
	}
	s.hold(t0.Add(stopFor))
	s.truth.end(sp)
	t1 := time.Now()
	if err := v.resume(); err != nil {
		s.fail(t, r, "SIGCONT", err)
		return
	}
	back, err := s.converged(t1)
	if s.check(t, r, "resumed node back in every ring", err) {
		r.converge = append(r.converge, "back "+secs(back))
	}
}

// 3. Partition 2|3 for 30 s with conflicting writes on both sides; heal.
const mechPartition = "each side declares the other dead (SWIM) and routes to its own side only; " +
	"memberlist gives up on the other side after GossipToTheDeadTime (5 s), and after the heal discovery's " +
	"reconnect loop (one failed member every 10 s) rejoins it; the join is a full state exchange, and overrides merge " +
	"by version (hybrid logical clock, node name as tie-break): the later write wins on both sides, deletes are tombstones that win too."

func (s *suite) partition(t *testing.T, r *row) {
	core := s.coreNodes()
	left, right := core[:2], core[2:]
	// Entries that exist everywhere before the split.
	for _, h := range []string{"del-then-set.example.com", "set-then-del.example.com"} {
		if _, err := s.setOverride(core[0], h, "10.250.3.1:8000"); err != nil {
			s.fail(t, r, "write before the partition", err)
			return
		}
	}
	if _, err := s.converged(time.Now()); err != nil {
		s.fail(t, r, "converged before the partition", err)
		return
	}
	t0 := time.Now()
	var spans []*span
	for _, pair := range [][2][]*node{{left, right}, {right, left}} {
		mine, theirs := pair[0], pair[1]
		var ips []string
		for _, n := range theirs {
			ips = append(ips, n.addr())
		}
		for _, n := range mine {
			if err := n.ns.cut(s.ctx, ips); err != nil {
				s.fail(t, r, "cut", err)
				return
			}
			// theirs lost every node of mine.
			spans = append(spans, s.truth.bad(n.instance(), names(theirs), detectWindow(coreNodes, len(mine)), "was cut off from the asker (partition)"))
		}
	}
	var wg sync.WaitGroup
	var outL, outR time.Duration
	var errL, errR error
	wg.Go(func() { outL, errL = s.waitRing(t0, left, left, "2-side rings = 2-side") })
	wg.Go(func() { outR, errR = s.waitRing(t0, right, right, "3-side rings = 3-side") })
	wg.Wait()
	if s.check(t, r, fmt.Sprintf("each side routes to its own side after %s (windows %s on the 2-side, %s on the 3-side)",
		secs(max(outL, outR)), secs(detectWindow(coreNodes, len(right))), secs(detectWindow(coreNodes, len(left)))), errors.Join(errL, errR)) {
		r.converge = append(r.converge, "split "+secs(max(outL, outR)))
	}

	// Conflicting writes, the later one on the other side each time, 20 ms
	// apart so that their clocks differ by more than the millisecond the
	// hybrid logical clock counts in.
	apart := func() { s.hold(time.Now().Add(20 * time.Millisecond)) }
	type write struct {
		n             *node
		host, backend string // backend "": delete
	}
	writes := []write{
		{left[0], "conflict-a.example.com", "10.250.3.11:8000"},
		{right[1], "conflict-a.example.com", "10.250.3.12:8000"}, // wins
		{right[0], "conflict-b.example.com", "10.250.3.21:8000"},
		{left[1], "conflict-b.example.com", "10.250.3.22:8000"}, // wins
		{left[1], "only-left.example.com", "10.250.3.31:8000"},
		{right[2], "only-right.example.com", "10.250.3.41:8000"},
		{right[2], "del-then-set.example.com", ""},
		{left[0], "del-then-set.example.com", "10.250.3.51:8000"}, // wins
		{left[1], "set-then-del.example.com", "10.250.3.61:8000"},
		{right[1], "set-then-del.example.com", ""}, // wins
	}
	var versions []string
	for _, w := range writes {
		var err error
		if w.backend == "" {
			err = s.deleteOverride(w.n, w.host)
		} else {
			var o httpapi.Override
			o, err = s.setOverride(w.n, w.host, w.backend)
			versions = append(versions, w.host+"@"+w.n.name+"="+o.Version)
		}
		if err != nil {
			s.fail(t, r, "writes during the partition acknowledged", err)
			return
		}
		apart()
	}
	r.held = append(r.held, "10 conflicting writes acknowledged on both sides")
	// Each side sees its own writes while split.
	var sideErr []error
	sideErr = append(sideErr, s.waitOverride(left[1], "conflict-a.example.com", "10.250.3.11:8000"))
	sideErr = append(sideErr, s.waitOverride(right[0], "conflict-a.example.com", "10.250.3.12:8000"))
	sideErr = append(sideErr, s.waitOverride(right[2], "conflict-b.example.com", "10.250.3.21:8000"))
	s.check(t, r, "each side serves its own writes while split", errors.Join(sideErr...))
	t.Logf("versions of the acknowledged sets: %s", strings.Join(versions, " "))

	s.hold(t0.Add(partitionFor))
	// The spans end when the heal begins: from then on an answer naming
	// the other side may be right.
	s.truth.end(spans...)
	t1 := time.Now()
	for _, n := range core {
		if err := n.ns.heal(s.ctx); err != nil {
			s.fail(t, r, "heal", err)
		}
	}
	healed, err := s.converged(t1)
	if s.check(t, r, "healed by itself; both sides agree on the later writes", err) {
		r.converge = append(r.converge, "healed "+secs(healed))
	}
}

// 4. One node isolated until memberlist forgets it; heal.
const mechIsolate = "memberlist stops gossiping to a dead node after GossipToTheDeadTime (5 s) and drops it from its list at " +
	"its next probe round, on both sides: nothing in memberlist would ever contact the other side again. discovery keeps " +
	"failed members for an hour and its reconnect loop tries one of them every 10 s (serf's reconnect), so both sides rejoin " +
	"by themselves; the isolated node also keeps its saved peers (a node cut off from everyone does not overwrite them)."

func (s *suite) isolate(t *testing.T, r *row) {
	core := s.coreNodes()
	v := core[4]
	others := without(core, v)
	var ips []string
	for _, n := range others {
		ips = append(ips, n.addr())
	}
	offsets := map[*node]int64{}
	for _, n := range core {
		_, offsets[n] = n.logSince(0)
	}
	t0 := time.Now()
	if err := v.ns.cut(s.ctx, ips); err != nil {
		s.fail(t, r, "cut", err)
		return
	}
	// The others lost one node; the isolated one lost all of them.
	spans := []*span{s.truth.bad(v.instance(), names(others), detectWindow(coreNodes, 1), "was isolated from the asker")}
	for _, n := range others {
		spans = append(spans, s.truth.bad(n.instance(), []string{v.name}, detectWindow(coreNodes, len(others)), "was cut off from the isolated asker"))
	}
	var wg sync.WaitGroup
	var outO, outV time.Duration
	var errO, errV error
	wg.Go(func() { outO, errO = s.waitRing(t0, others, others, "the 4 route to the 4") })
	wg.Go(func() { outV, errV = s.waitRing(t0, []*node{v}, []*node{v}, "the isolated node routes to itself") })
	wg.Wait()
	if s.check(t, r, fmt.Sprintf("the 4 drop it after %s (window %s), it drops the 4 after %s (window %s)",
		secs(outO), secs(detectWindow(coreNodes, 1)), secs(outV), secs(detectWindow(coreNodes, len(others)))), errors.Join(errO, errV)) {
		r.converge = append(r.converge, fmt.Sprintf("out %s / %s", secs(outO), secs(outV)))
	}
	_, e1 := s.setOverride(others[0], "majority.example.com", "10.250.4.1:8000")
	_, e2 := s.setOverride(v, "isolated.example.com", "10.250.4.2:8000")
	s.check(t, r, "writes on both sides acknowledged", errors.Join(e1, e2))

	s.hold(t0.Add(isolateFor))
	s.truth.end(spans...)
	t1 := time.Now()
	if err := v.ns.heal(s.ctx); err != nil {
		s.fail(t, r, "heal", err)
	}
	back, err := s.converged(t1)
	if s.check(t, r, "rejoined by itself (no join call)", err) {
		r.converge = append(r.converge, "rejoined "+secs(back))
	}
	// The rejoin returns (and is logged) a little after the exchange
	// that healed the views.
	reconnects := 0
	ctx, cancel := context.WithTimeout(s.ctx, 15*time.Second)
	defer cancel()
	err = cluster.Poll(ctx, 50*time.Millisecond, `a node logged "reconnected to a failed member"`, func() (bool, string) {
		reconnects = 0
		for _, n := range core {
			text, _ := n.logSince(offsets[n])
			reconnects += strings.Count(text, "reconnected to a failed member")
		}
		return reconnects > 0, "none yet"
	})
	s.check(t, r, "healed by discovery's reconnect loop", err)
	r.notes = append(r.notes, fmt.Sprintf("isolated %s; heal to agreement %s; %d \"reconnected to a failed member\" log lines", secs(isolateFor), secs(back), reconnects))
}

// 5. Rolling restart of the five, one at a time, under load.
const mechRolling = "SIGTERM drains first (the draining flag is gossiped and takes the node out of every ring before it leaves), " +
	"then a graceful leave (others list it as left, not failed) within --leave-timeout, exit 0; the restart rejoins " +
	"through its saved peers (no --join) and the others take it back at once (a left node's name is free)."

func (s *suite) rolling(t *testing.T, r *row) {
	var worstStop, worstBack time.Duration
	for i, v := range s.coreNodes() {
		others := without(s.coreNodes(), v)
		if _, err := s.setOverride(v, fmt.Sprintf("rolling-%d.example.com", i+1), fmt.Sprintf("10.250.5.%d:8000", i+1)); err != nil {
			s.fail(t, r, "write before the restart", err)
			return
		}
		t0 := time.Now()
		sp := s.truth.bad(v.instance(), nil, leaveWindow, "was stopped (SIGTERM)")
		code, err := v.stop()
		stopped := time.Since(t0)
		worstStop = max(worstStop, stopped)
		if err == nil && code != 0 {
			err = fmt.Errorf("%s exited with code %d after SIGTERM, want 0", v.name, code)
		}
		if err != nil {
			s.fail(t, r, "graceful stop", err)
			return
		}
		if _, err := s.waitRing(t0, others, others, v.name+" out of every ring"); err != nil {
			s.fail(t, r, "out of every ring", err)
		}
		v.seeds = nil
		s.truth.end(sp)
		t1 := time.Now()
		if err := v.start(s.ctx); err != nil {
			s.fail(t, r, "restart", err)
			return
		}
		back, err := s.converged(t1)
		if err != nil {
			s.fail(t, r, v.name+" back in every ring", err)
			return
		}
		worstBack = max(worstBack, back)
	}
	r.held = append(r.held, fmt.Sprintf("5 graceful stops, exit 0, each within %s", secs(worstStop)))
	r.converge = append(r.converge, "each back within "+secs(worstBack))
}

// 6. Churn: a node joins or leaves every second for a minute.
const mechChurn = "joins spread by gossip and push/pull; graceful leaves drain first; crashes are detected by SWIM as in row 1; " +
	"a node restarted right after a crash refutes its own death with a higher incarnation; rings are rebuilt from the full " +
	"live set after each coalesced burst of changes, so no sequence of joins and leaves can make them drift."

func (s *suite) churn(t *testing.T, r *row) {
	if len(s.extras) == 0 {
		for i := 1; i <= churnNodes; i++ {
			ns, err := s.lab.addNamespace(s.ctx, coreNodes+i)
			if err != nil {
				s.fail(t, r, "namespaces for the churn", err)
				return
			}
			n, err := newNode(fmt.Sprintf("x%d", i), false, ns, s.dir, s.truth)
			if err != nil {
				s.fail(t, r, "churn nodes", err)
				return
			}
			s.mu.Lock()
			s.extras = append(s.extras, n)
			s.mu.Unlock()
		}
	}
	var seeds []string
	for _, n := range s.coreNodes() {
		seeds = append(seeds, n.gossipAddr())
	}
	type state struct {
		busy bool
		span *span
	}
	var mu sync.Mutex
	st := map[*node]*state{}
	for _, n := range s.extras {
		n.seeds = seeds
		st[n] = &state{}
	}
	var wg sync.WaitGroup
	var joins, graceful, crashes, writes int
	var errs []error
	deadline := time.Now().Add(churnFor)
	tick := time.NewTicker(churnEvery)
	defer tick.Stop()
	for event := 0; time.Now().Before(deadline); event++ {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
		mu.Lock()
		var up, down []*node
		for _, n := range s.extras {
			if st[n].busy {
				continue
			}
			if n.running() {
				up = append(up, n)
			} else {
				down = append(down, n)
			}
		}
		join := len(down) > 0 && (len(up) == 0 || rand.IntN(2) == 0)
		var n *node
		switch {
		case join:
			n = down[rand.IntN(len(down))]
		case len(up) > 0:
			n = up[rand.IntN(len(up))]
		}
		if n != nil {
			st[n].busy = true
		}
		mu.Unlock()
		if n == nil {
			continue
		}
		members := len(s.running())
		crash := !join && event%2 == 1
		switch {
		case join:
			joins++
		case crash:
			crashes++
		default:
			graceful++
		}
		wg.Go(func() {
			var err error
			switch {
			case join:
				mu.Lock()
				s.truth.end(st[n].span)
				mu.Unlock()
				err = n.start(s.ctx)
			case crash:
				sp := s.truth.bad(n.instance(), nil, detectWindow(members, 1), "was killed (churn)")
				mu.Lock()
				st[n].span = sp
				mu.Unlock()
				err = n.kill()
			default:
				sp := s.truth.bad(n.instance(), nil, leaveWindow, "was stopped (churn)")
				mu.Lock()
				st[n].span = sp
				mu.Unlock()
				var code int
				code, err = n.stop()
				if err == nil && code != 0 {
					err = fmt.Errorf("%s exited with code %d after SIGTERM", n.name, code)
				}
			}
			mu.Lock()
			st[n].busy = false
			if err != nil {
				errs = append(errs, err)
			}
			mu.Unlock()
		})
		if event%5 == 0 {
			core := s.coreNodes()
			if _, err := s.setOverride(core[rand.IntN(len(core))], fmt.Sprintf("churn-%d.example.com", event), fmt.Sprintf("10.250.6.%d:8000", event%250+1)); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			writes++
		}
	}
	wg.Wait()
	mu.Lock()
	err := errors.Join(errs...)
	mu.Unlock()
	s.check(t, r, fmt.Sprintf("%d joins, %d graceful leaves, %d kill -9, %d override writes", joins, graceful, crashes, writes), err)
	// Back to the five: stop the extras that run.
	t1 := time.Now()
	for _, n := range s.extras {
		if n.running() {
			// The span stays open: the node stays down.
			s.truth.bad(n.instance(), nil, leaveWindow, "was stopped (end of churn)")
			if _, err := n.stop(); err != nil {
				s.fail(t, r, "stop after churn", err)
			}
		}
	}
	back, err := s.converged(t1)
	if s.check(t, r, "the five agree once churn stops", err) {
		r.converge = append(r.converge, "5 again "+secs(back))
	}
}

// 7. A node restarts with the same name and a new address.
const mechReaddress = "the old address stops answering probes, so its instance leaves every ring as after a crash; memberlist " +
	"refuses the new address for the same name (a conflict) until DeadNodeReclaimTime (1 s with the fast profile) after the old one " +
	"was declared dead; the conflict makes the other members join the new address every 0.5 s (discovery's reclaimLoop) " +
	"until one of those exchanges lands after the reclaim time, and gossip spreads the new address from there."

func (s *suite) readdress(t *testing.T, r *row) {
	v := s.core[3]
	others := without(s.coreNodes(), v)
	if _, err := s.setOverride(v, "moved.example.com", "10.250.7.1:8000"); err != nil {
		s.fail(t, r, "write before the move", err)
		return
	}
	oldInst, oldIP := v.instance(), v.addr()
	t0 := time.Now()
	s.truth.bad(oldInst, nil, detectWindow(coreNodes, 1), "is the old address of a moved node") // for good
	if err := v.kill(); err != nil {
		s.fail(t, r, "kill", err)
		return
	}
	newIP := v.ns.movedIP()
	if newIP == oldIP {
		newIP = v.ns.homeIP()
	}
	if err := v.moveTo(s.ctx, newIP); err != nil {
		s.fail(t, r, "new address", err)
		return
	}
	v.seeds = nil
	if err := v.start(s.ctx); err != nil {
		s.fail(t, r, "restart at the new address", err)
		return
	}
	back, err := s.converged(t0)
	if s.check(t, r, fmt.Sprintf("%s moved %s -> %s: every ring has the new instance, none the old", v.name, oldIP, newIP), err) {
		r.converge = append(r.converge, "moved "+secs(back))
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	var errs []error
	for _, n := range others {
		ms, err := n.API().Members(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, m := range ms {
			if m.Name == v.name && (m.Status != "alive" || !strings.HasPrefix(m.Addr, newIP+":")) {
				errs = append(errs, fmt.Errorf("%s lists %s at %s as %s", n.name, m.Name, m.Addr, m.Status))
			}
		}
	}
	s.check(t, r, "every node lists it alive at the new address", errors.Join(errs...))
}

// 8. 10% packet loss on one node's link for 30 s.
const mechLoss = "SWIM does not trust one lost probe: a missed ack is followed by indirect probes through 3 other members " +
	"and a TCP ping, and a suspect node refutes the suspicion; Lifeguard (local health awareness) makes the lossy node " +
	"itself slower to accuse others. A false removal would show as a \"node failed\" log line and an instance missing from a ring."

func (s *suite) loss(t *testing.T, r *row) {
	core := s.coreNodes()
	v := core[0]
	offsets := map[*node]int64{}
	for _, n := range core {
		_, offsets[n] = n.logSince(0)
	}
	if err := v.ns.lose(s.ctx); err != nil {
		s.fail(t, r, "loss rules", err)
		return
	}
	// Watch every ring while the loss lasts: any missing instance is a
	// false removal, as no node is down.
	want := instances(core)
	var degraded time.Duration
	var flaps int
	last := time.Now()
	end := last.Add(lossFor)
	tick := time.NewTicker(100 * time.Millisecond)
	missing := false
	for time.Now().Before(end) {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		full := true
		for _, n := range core {
			got, err := n.ringMembers(s.ctx)
			if err == nil && !slices.Equal(got, want) {
				full = false
			}
		}
		if !full {
			degraded += now.Sub(last)
			if !missing {
				flaps++
			}
		}
		missing = !full
		last = now
	}
	tick.Stop()
	seen, dropped, cerr := v.ns.lossCounters(s.ctx)
	if err := v.ns.heal(s.ctx); err != nil {
		s.fail(t, r, "heal", err)
	}
	failedLines, suspicions, refuted := 0, 0, 0
	for _, n := range core {
		text, _ := n.logSince(offsets[n])
		failedLines += strings.Count(text, "msg=\"node failed\"")
		suspicions += strings.Count(text, "memberlist: Suspect ")
		refuted += strings.Count(text, "memberlist: Refuting a suspect message")
	}
	r.notes = append(r.notes, fmt.Sprintf("%d suspicions raised (\"Suspect ... has failed\"), %d refuted by the suspect itself", suspicions, refuted))
	if cerr != nil {
		s.fail(t, r, "loss counters", cerr)
	} else {
		r.notes = append(r.notes, fmt.Sprintf("nftables dropped %d of %d packets on %s's link (%.1f%%)", dropped, seen, v.name, 100*float64(dropped)/math.Max(1, float64(seen))))
		if seen == 0 || dropped == 0 {
			s.fail(t, r, "loss applied", fmt.Errorf("loss rules saw %d packets and dropped %d", seen, dropped))
		}
	}
	if failedLines == 0 && flaps == 0 {
		r.held = append(r.held, "no false removal (no \"node failed\", every ring full at every 100 ms sample)")
		r.converge = append(r.converge, "never diverged")
	} else {
		// The issue allows this, as the profile's stated cost.
		r.notes = append(r.notes, fmt.Sprintf("cost of the fast profile: %d \"node failed\" log lines, %d times a ring lacked a live instance, %s in all", failedLines, flaps, secs(degraded)))
		r.held = append(r.held, fmt.Sprintf("false removals measured: %d (see notes)", failedLines))
		r.converge = append(r.converge, fmt.Sprintf("rings short %s in all", secs(degraded)))
	}
}
