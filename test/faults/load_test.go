package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// span is a time during which an instance must not be answered to some
// askers: its node was killed, stopped, hung, or cut off from them. Answers
// are judged only once the span is window old (the detection window of the
// fault, see windows in faults_test.go): before that the cluster cannot
// know yet.
type span struct {
	inst   string
	askers map[string]bool // nil: every node
	from   time.Time
	to     time.Time // zero while it lasts
	window time.Duration
	why    string
}

// truth is what the test knows of the cluster: which node advertises which
// instance, and the spans. Safe for concurrent use.
type truth struct {
	stalls *stalls

	mu    sync.RWMutex
	owner map[string]string // instance -> node
	spans []*span
}

func newTruth(st *stalls) *truth { return &truth{stalls: st, owner: map[string]string{}} }

func (tr *truth) advertise(inst, node string) {
	tr.mu.Lock()
	tr.owner[inst] = node
	tr.mu.Unlock()
}

// bad opens a span for inst; end closes it.
func (tr *truth) bad(inst string, askers []string, window time.Duration, why string) *span {
	s := &span{inst: inst, from: time.Now(), window: window, why: why}
	if askers != nil {
		s.askers = map[string]bool{}
		for _, a := range askers {
			s.askers[a] = true
		}
	}
	tr.mu.Lock()
	tr.spans = append(tr.spans, s)
	tr.mu.Unlock()
	return s
}

func (tr *truth) end(spans ...*span) {
	now := time.Now()
	tr.mu.Lock()
	for _, s := range spans {
		if s != nil && s.to.IsZero() {
			s.to = now
		}
	}
	tr.mu.Unlock()
}

// endFor closes the open spans of insts (a failed scenario may leave some
// open; the next one starts from a healthy cluster).
func (tr *truth) endFor(insts []string) {
	now := time.Now()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, s := range tr.spans {
		if s.to.IsZero() && slices.Contains(insts, s.inst) {
			s.to = now
		}
	}
}

// judge says what is wrong with answer, asked of asker between t0 and t1,
// or "". An answer is wrong when it is empty (every asker has at least its
// own instance live), names no instance of the cluster, or names one that
// was inside a span for asker from at least the span's window before t0
// until after t1. The window is stretched by the time the machine was too
// busy to run the test process since the span began (see stalls): the
// daemons share those two cores, and a window is a promise about time in
// which they could run. stale is how long such a span had lasted at t0
// when the answer came inside its window (0 otherwise): how long routing
// lagged.
func (tr *truth) judge(asker, answer string, t0, t1 time.Time) (why string, stale time.Duration) {
	if answer == "" {
		return "no answer", 0
	}
	tr.mu.RLock()
	defer tr.mu.RUnlock()
	owner, ok := tr.owner[answer]
	if !ok {
		return fmt.Sprintf("%s is no instance of the cluster", answer), 0
	}
	for _, s := range tr.spans {
		if s.inst != answer || (s.askers != nil && !s.askers[asker]) {
			continue
		}
		if s.from.After(t0) || (!s.to.IsZero() && s.to.Before(t1)) {
			continue
		}
		lasted := t0.Sub(s.from)
		if lasted >= s.window+tr.stalls.lost(s.from, t0) {
			return fmt.Sprintf("%s (node %s) %s %.1f s earlier (window %v)",
				answer, owner, s.why, lasted.Seconds(), s.window), 0
		}
		stale = max(stale, lasted)
	}
	return "", stale
}

// tally counts what the load generator saw during one scenario.
type tally struct {
	lookups atomic.Int64
	wrong   atomic.Int64
	errors  atomic.Int64
	// stale is the longest a span had lasted when an answer still named
	// its instance (inside the window): the routing lag actually seen.
	stale atomic.Int64
	// slowest is the slowest lookup round trip.
	slowest atomic.Int64

	mu         sync.Mutex
	wrongSeen  []string // the first wrong answers
	errorsSeen []string // the first errors
}

func (t *tally) note(to *[]string, format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(*to) < 10 {
		*to = append(*to, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
	}
}

// load asks every serving node for random keys all the time and judges
// every answer.
type load struct {
	truth *truth
	cur   atomic.Pointer[tally]
	wg    sync.WaitGroup
	stop  context.CancelFunc
}

const (
	// lookupTimeout bounds a lookup: long enough that only a server that
	// hangs fails it, not one slowed down by a busy machine (the slowest
	// round trip is reported instead).
	lookupTimeout = 10 * time.Second
	// loadEvery and loadBatch: each node gets an MGET of loadBatch keys
	// every loadEvery, about 640 lookups per second per node.
	loadEvery = 25 * time.Millisecond
	loadBatch = 16
)

func startLoad(ctx context.Context, tr *truth, nodes func() []*node) *load {
	ctx, cancel := context.WithCancel(ctx)
	l := &load{truth: tr, stop: cancel}
	l.cur.Store(&tally{})
	l.wg.Go(func() {
		// One worker per node, started when the node first appears.
		workers := map[*node]bool{}
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, n := range nodes() {
				if !workers[n] {
					workers[n] = true
					l.wg.Go(func() { l.ask(ctx, n) })
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	return l
}

// begin starts counting for a new scenario and returns its tally.
func (l *load) begin() *tally {
	t := &tally{}
	l.cur.Store(t)
	return t
}

func (l *load) close() {
	l.stop()
	l.wg.Wait()
}

func (l *load) ask(ctx context.Context, n *node) {
	tick := time.NewTicker(loadEvery)
	defer tick.Stop()
	keys := make([]string, loadBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rdb, epoch := n.client()
		if rdb == nil {
			continue
		}
		for i := range keys {
			keys[i] = fmt.Sprintf("/load/%d", rand.IntN(1_000_000))
		}
		t := l.cur.Load()
		rctx, cancel := context.WithTimeout(ctx, lookupTimeout+time.Second)
		t0 := time.Now()
		vals, err := rdb.MGet(rctx, keys...).Result()
		t1 := time.Now()
		cancel()
		storeMax(&t.slowest, int64(t1.Sub(t0)))
		if err != nil {
			// Only errors of a node that served all along count: one
			// the test stopped in the meantime may fail its request.
			if ctx.Err() == nil && n.stillServing(epoch) {
				t.errors.Add(1)
				t.note(&t.errorsSeen, "%s: MGET after %v: %v", n.name, t1.Sub(t0).Round(time.Millisecond), err)
			}
			continue
		}
		t.lookups.Add(int64(len(vals)))
		for i, v := range vals {
			answer, _ := v.(string)
			why, stale := l.truth.judge(n.name, answer, t0, t1)
			if why != "" {
				t.wrong.Add(1)
				t.note(&t.wrongSeen, "%s answered %q for %s: %s", n.name, answer, keys[i], why)
			}
			storeMax(&t.stale, int64(stale))
		}
	}
}

func storeMax(v *atomic.Int64, x int64) {
	for {
		old := v.Load()
		if x <= old || v.CompareAndSwap(old, x) {
			return
		}
	}
}

// stalls measures how long the test process could not run: a ticker every
// stallTick, whose lateness past stallSlack counts as lost time. On a
// shared 2-core machine this is time the daemons could not run either, or
// not much more than that.
type stalls struct {
	mu    sync.Mutex
	marks []stallMark // one per stall
	total time.Duration
}

type stallMark struct {
	at    time.Time
	gap   time.Duration
	total time.Duration // including this one
}

const (
	stallTick  = 10 * time.Millisecond
	stallSlack = 50 * time.Millisecond
)

func (st *stalls) run(ctx context.Context) {
	tick := time.NewTicker(stallTick)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			now = time.Now()
			if gap := now.Sub(last); gap > stallSlack {
				st.mu.Lock()
				st.total += gap - stallTick
				st.marks = append(st.marks, stallMark{now, gap - stallTick, st.total})
				st.mu.Unlock()
			}
			last = now
		}
	}
}

// at returns the total lost by time t.
func (st *stalls) at(t time.Time) time.Duration {
	i, _ := slices.BinarySearchFunc(st.marks, t, func(m stallMark, t time.Time) int { return m.at.Compare(t) })
	if i == 0 {
		return 0
	}
	return st.marks[i-1].total
}

// lost returns the time lost between a and b.
func (st *stalls) lost(a, b time.Time) time.Duration {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.at(b) - st.at(a)
}

// since returns the time lost since t, and the longest stall in it.
func (st *stalls) since(t time.Time) (total, longest time.Duration) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, m := range st.marks {
		if !m.at.Before(t) {
			total += m.gap
			longest = max(longest, m.gap)
		}
	}
	return total, longest
}
