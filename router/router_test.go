package router_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"ringman/ring"
	"ringman/router"
)

// Small settings keep rebuilds cheap; they differ from the defaults so that a
// Router ignoring its settings would place keys differently from ring.New.
var settings = ring.Settings{Partitions: 211, Load: 1.25, ReplicationFactor: 7}

func newRouter(t testing.TB) *router.Router {
	t.Helper()
	r, err := router.New(settings, "web")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d:8080", prefix, i)
	}
	return out
}

var keys = func() [][]byte {
	out := make([][]byte, 500)
	for i := range out {
		out[i] = fmt.Appendf(nil, "/movies/%d/poster.jpg", i)
	}
	return out
}()

// expectService checks every key's Lookup and Candidates on service against a
// ring built from scratch with the same settings and instances.
func expectService(t *testing.T, r *router.Router, service string, instances []string) {
	t.Helper()
	want, err := ring.New(settings, instances)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		got, src := r.Lookup(service, k)
		wantOwner, ok := want.OwnerBytes(k)
		if !ok {
			if got != "" || src != router.Miss {
				t.Fatalf("Lookup(%q, %s) = %q, %v; want a miss", service, k, got, src)
			}
		} else if got != wantOwner || src != router.Ring {
			t.Fatalf("Lookup(%q, %s) = %q, %v; want %q, ring", service, k, got, src, wantOwner)
		}
		cands, src := r.Candidates(service, k, 3)
		wantCands := want.CandidatesBytes(k, 3)
		if !slices.Equal(cands, wantCands) || (len(wantCands) > 0) != (src == router.Ring) {
			t.Fatalf("Candidates(%q, %s, 3) = %q, %v; want %q", service, k, cands, src, wantCands)
		}
	}
}

func update(t *testing.T, r *router.Router, instances map[string][]string, wantChanged ...string) {
	t.Helper()
	changes, err := r.Update(instances)
	if err != nil {
		t.Fatalf("Update(%v): %v", instances, err)
	}
	if changed := services(changes); !slices.Equal(changed, wantChanged) {
		t.Fatalf("Update(%v) changed %q, want %q", instances, changed, wantChanged)
	}
}

func TestNew(t *testing.T) {
	if _, err := router.New(ring.Settings{}, "web"); err == nil || !strings.Contains(err.Error(), "partitions") {
		t.Errorf("New with zero settings: %v, want an error about partitions", err)
	}
	if _, err := router.New(settings, ""); err == nil {
		t.Error("New with an empty default service: no error")
	}
	r := newRouter(t)
	if r.DefaultService() != "web" || r.Settings().Fingerprint() != settings.Fingerprint() {
		t.Errorf("DefaultService %q, Settings %+v", r.DefaultService(), r.Settings())
	}
	// Nothing published yet: every lookup misses.
	for _, service := range []string{"", "web", "api"} {
		if got, src := r.Lookup(service, keys[0]); got != "" || src != router.Miss {
			t.Errorf("Lookup(%q) before Update = %q, %v", service, got, src)
		}
		if got, src := r.Candidates(service, keys[0], 2); got != nil || src != router.Miss {
			t.Errorf("Candidates(%q) before Update = %q, %v", service, got, src)
		}
		if r.Ring(service) != nil {
			t.Errorf("Ring(%q) before Update is not nil", service)
		}
	}
	if len(r.Rings()) != 0 {
		t.Errorf("Rings() before Update = %v", r.Rings())
	}
}

func TestSourceString(t *testing.T) {
	for src, want := range map[router.Source]string{router.Miss: "miss", router.Ring: "ring", router.Override: "override", 42: "miss"} {
		if src.String() != want {
			t.Errorf("Source(%d).String() = %q, want %q", src, src.String(), want)
		}
	}
}

func TestUpdate(t *testing.T) {
	r := newRouter(t)
	web, api := names("web", 5), names("api", 4)

	update(t, r, map[string][]string{"web": web[:3], "api": api[:2]}, "api", "web")
	expectService(t, r, "web", web[:3])
	expectService(t, r, "", web[:3]) // the default service
	expectService(t, r, "api", api[:2])
	expectService(t, r, "video", nil) // unknown service
	webRing, apiRing := r.Ring("web"), r.Ring("api")
	if r.Ring("") != webRing || webRing.Len() != 3 || apiRing.Len() != 2 {
		t.Fatalf("Ring(\"\") = %p, Ring(web) = %p with %d instances, Ring(api) has %d",
			r.Ring(""), webRing, webRing.Len(), apiRing.Len())
	}

	// The same web set in another order and with duplicates is no change: its
	// ring is not rebuilt.
	update(t, r, map[string][]string{"web": {web[2], web[0], web[1], web[0]}, "api": api[:3]}, "api")
	if r.Ring("web") != webRing {
		t.Error("unchanged service web got a new ring")
	}
	if r.Ring("api") == apiRing {
		t.Error("changed service api kept its ring")
	}
	expectService(t, r, "web", web[:3])
	expectService(t, r, "api", api[:3])
	apiRing = r.Ring("api")

	update(t, r, map[string][]string{"web": web[:3], "api": api[:3]}) // nothing changed
	if r.Ring("web") != webRing || r.Ring("api") != apiRing {
		t.Error("an Update without changes replaced a ring")
	}

	// A service that disappears misses, and is reported as changed.
	update(t, r, map[string][]string{"web": web[:3]}, "api")
	expectService(t, r, "api", nil)
	if r.Ring("api") != nil || len(r.Rings()) != 1 || r.Rings()["web"] != webRing {
		t.Errorf("after api left: Ring(api) = %v, Rings() = %v", r.Ring("api"), r.Rings())
	}

	// It comes back with a fresh ring.
	update(t, r, map[string][]string{"web": web[:3], "api": api[1:3]}, "api")
	expectService(t, r, "api", api[1:3])

	// A service with no instances misses but stays known; nil and empty lists
	// are the same set.
	update(t, r, map[string][]string{"web": nil, "api": api[1:3]}, "web")
	expectService(t, r, "web", nil)
	expectService(t, r, "", nil)
	if rg := r.Ring("web"); rg.Len() != 0 {
		t.Errorf("Ring(web) with no instances has %d", rg.Len())
	}
	update(t, r, map[string][]string{"web": {}, "api": api[1:3]})

	// Everything at once.
	update(t, r, map[string][]string{"web": web, "api": api, "video": names("video", 2)}, "api", "video", "web")
	expectService(t, r, "", web)
	expectService(t, r, "api", api)
	expectService(t, r, "video", names("video", 2))
	update(t, r, nil, "api", "video", "web")
	for _, s := range []string{"", "web", "api", "video"} {
		expectService(t, r, s, nil)
	}
}

func TestUpdateErrors(t *testing.T) {
	r := newRouter(t)
	web, api := names("web", 3), names("api", 3)

	// A bad list for a new service: that service gets no ring, the others
	// are published.
	changes, err := r.Update(map[string][]string{"web": {web[0], ""}, "api": api[:1]})
	changed := services(changes)
	if !errors.Is(err, ring.ErrInvalidInstance) || !strings.Contains(err.Error(), "web") {
		t.Fatalf("Update with an empty instance name: %v; want ErrInvalidInstance naming web", err)
	}
	if !slices.Equal(changed, []string{"api"}) {
		t.Errorf("changed = %q, want [api]", changed)
	}
	expectService(t, r, "web", nil)
	expectService(t, r, "api", api[:1])

	update(t, r, map[string][]string{"web": web[:2], "api": api[:1]}, "web")
	webRing := r.Ring("web")

	// A bad list for a known service: it keeps its previous ring.
	changes, err = r.Update(map[string][]string{"web": {"", web[2]}, "api": api[:2]})
	changed = services(changes)
	if !errors.Is(err, ring.ErrInvalidInstance) || !strings.Contains(err.Error(), "web") {
		t.Fatalf("Update with an empty instance name: %v", err)
	}
	if !slices.Equal(changed, []string{"api"}) {
		t.Errorf("changed = %q, want [api]", changed)
	}
	if r.Ring("web") != webRing {
		t.Error("a failed update replaced web's ring")
	}
	expectService(t, r, "web", web[:2])
	expectService(t, r, "api", api[:2])

	// The previous set is still what web is compared against.
	update(t, r, map[string][]string{"web": web[:2], "api": api[:2]})
	if r.Ring("web") != webRing {
		t.Error("web's ring was rebuilt for its unchanged set")
	}
}

func TestLookupAllocations(t *testing.T) {
	r := newRouter(t)
	update(t, r, map[string][]string{"web": names("web", 20), "api": names("api", 3)}, "api", "web")
	key := keys[7]
	for name, f := range map[string]func(){
		"Lookup":             func() { r.Lookup("api", key) },
		"Lookup default":     func() { r.Lookup("", key) },
		"Lookup unknown":     func() { r.Lookup("video", key) },
		"Candidates":         func() { r.Candidates("web", key, 3) },
		"Candidates unknown": func() { r.Candidates("video", key, 3) },
	} {
		if a := testing.AllocsPerRun(1000, f); a != 0 {
			t.Errorf("%s allocates %v times per call", name, a)
		}
	}
}

// TestConcurrentLookups runs lookups while Update publishes new rings, for
// the race detector and to check that every answer comes from one whole ring.
func TestConcurrentLookups(t *testing.T) {
	r := newRouter(t)
	webAll, apiAll := names("web", 12), names("api", 6)
	update(t, r, map[string][]string{"web": webAll[:1]}, "web")

	const readers = 2
	var (
		stop    atomic.Bool
		ready   sync.WaitGroup
		done    sync.WaitGroup
		lookups atomic.Int64
	)
	ready.Add(readers)
	done.Add(readers)
	for g := range readers {
		go func() {
			defer done.Done()
			n := 0
			defer func() {
				if n == 0 { // failed on the first lookup: do not leave the writer waiting
					ready.Done()
				}
			}()
			for i := g; ; i++ {
				k := keys[i%len(keys)]
				// web always has an instance.
				if got, src := r.Lookup("", k); src != router.Ring || !slices.Contains(webAll, got) {
					t.Errorf("Lookup(web, %s) = %q, %v", k, got, src)
					return
				}
				if got, src := r.Lookup("api", k); src == router.Ring && !slices.Contains(apiAll, got) ||
					src == router.Miss && got != "" || src == router.Override {
					t.Errorf("Lookup(api, %s) = %q, %v", k, got, src)
					return
				}
				c, _ := r.Candidates("web", k, 3)
				if len(c) == 0 || len(c) > 3 || !allDistinctIn(c, webAll) {
					t.Errorf("Candidates(web, %s, 3) = %q", k, c)
					return
				}
				// One loaded ring answers consistently.
				rg := r.Ring("web")
				if o, _ := rg.OwnerBytes(k); o != rg.CandidatesBytes(k, 3)[0] {
					t.Errorf("ring owner %q is not its first candidate", o)
					return
				}
				n++
				if n == 1 {
					ready.Done()
				}
				if stop.Load() {
					break
				}
			}
			lookups.Add(int64(n))
		}()
	}
	ready.Wait() // every reader is running before the updates start

	rng := rand.New(rand.NewPCG(3, 4))
	prev := map[string][]string{"web": webAll[:1]}
	const updates = 100
	for range updates {
		next := map[string][]string{"web": randomSubset(rng, webAll, 1)}
		if rng.IntN(3) > 0 {
			next["api"] = randomSubset(rng, apiAll, 0)
		}
		changes, err := r.Update(next)
		if err != nil {
			t.Fatal(err)
		}
		if changed, want := services(changes), changedServices(prev, next); !slices.Equal(changed, want) {
			t.Fatalf("Update from %v to %v: changed %q, want %q", prev, next, changed, want)
		}
		prev = next
	}
	stop.Store(true)
	done.Wait()
	t.Logf("%d lookups during %d updates", lookups.Load(), updates)
}

// randomSubset returns at least least members of all, shuffled, with a
// duplicate now and then.
func randomSubset(rng *rand.Rand, all []string, least int) []string {
	var out []string
	for len(out) < least {
		out = out[:0]
		for _, x := range all {
			if rng.IntN(2) == 0 {
				out = append(out, x)
			}
		}
	}
	if len(out) > 0 && rng.IntN(4) == 0 {
		out = append(out, out[0])
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// services lists the services of changes, in order.
func services(changes []router.Change) []string {
	var out []string
	for _, c := range changes {
		out = append(out, c.Service)
	}
	return out
}

// changedServices is what Update should report: services whose set of
// instances differs, appeared or disappeared, sorted.
func changedServices(prev, next map[string][]string) []string {
	set := func(l []string) []string {
		l = slices.Clone(l)
		slices.Sort(l)
		return slices.Compact(l)
	}
	var out []string
	for s, l := range next {
		if p, ok := prev[s]; !ok || !slices.Equal(set(p), set(l)) {
			out = append(out, s)
		}
	}
	for s := range prev {
		if _, ok := next[s]; !ok {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

func allDistinctIn(list, all []string) bool {
	for i, x := range list {
		if !slices.Contains(all, x) || slices.Contains(list[:i], x) {
			return false
		}
	}
	return true
}

func BenchmarkLookup(b *testing.B) {
	r, err := router.New(ring.DefaultSettings(), "web")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := r.Update(map[string][]string{"web": names("web", 100), "api": names("api", 10)}); err != nil {
		b.Fatal(err)
	}
	var sink atomic.Int64
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		total, i := 0, 0
		for b.Loop() {
			s, _ := r.Lookup("", keys[i%len(keys)])
			total += len(s)
			i++
		}
		sink.Add(int64(total))
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			total, i := 0, 0
			for pb.Next() {
				s, _ := r.Lookup("web", keys[i%len(keys)])
				total += len(s)
				i++
			}
			sink.Add(int64(total))
		})
	})
	b.Run("candidates", func(b *testing.B) {
		b.ReportAllocs()
		total, i := 0, 0
		for b.Loop() {
			c, _ := r.Candidates("web", keys[i%len(keys)], 3)
			total += len(c)
			i++
		}
		sink.Add(int64(total))
	})
}

// TestUpdateReportsChanges checks what serve logs on each membership change:
// the instances added and removed, and the fraction of keys that moved.
func TestUpdateReportsChanges(t *testing.T) {
	r := newRouter(t)
	web := names("web", 4)
	changes, err := r.Update(map[string][]string{"web": web[:3]})
	if err != nil || len(changes) != 1 {
		t.Fatalf("first Update: %+v, %v", changes, err)
	}
	if c := changes[0]; c.Service != "web" || !slices.Equal(c.Added, web[:3]) || c.Removed != nil || c.Moved != 1 {
		t.Errorf("a new service: %+v; want web, all added, every key moved (1)", c)
	}
	changes, _ = r.Update(map[string][]string{"web": {web[0], web[2], web[3]}})
	if c := changes[0]; !slices.Equal(c.Added, web[3:]) || !slices.Equal(c.Removed, web[1:2]) || c.Moved < 0.2 || c.Moved > 0.6 {
		t.Errorf("one instance replaced of three: %+v; want %s added, %s removed, about a third to a half of the keys moved", c, web[3], web[1])
	}
	changes, _ = r.Update(map[string][]string{})
	if c := changes[0]; c.Service != "web" || len(c.Removed) != 3 || c.Moved != 1 {
		t.Errorf("service gone: %+v; want its 3 instances removed and every key moved", c)
	}
}

// A ring with more instances than its partitions give keys to says how
// many own none, so that serve can warn.
func TestUpdateCountsIdleInstances(t *testing.T) {
	s := ring.DefaultSettings()
	s.Partitions = 7
	r, err := router.New(s, "web")
	if err != nil {
		t.Fatal(err)
	}
	changes, err := r.Update(map[string][]string{"web": names("web", 20)})
	if err != nil || len(changes) != 1 {
		t.Fatalf("Update: %+v, %v", changes, err)
	}
	if c := changes[0]; c.Idle < 20-7 {
		t.Errorf("20 instances on 7 partitions: Idle = %d, want at least 13", c.Idle)
	}
	changes, _ = r.Update(map[string][]string{"web": names("web", 3)})
	if c := changes[0]; c.Idle != 0 {
		t.Errorf("3 instances on 7 partitions: Idle = %d, want 0", c.Idle)
	}
}

// BenchmarkServicesMemory is the heap a Router holds for many small
// services (1,000 of 8 instances each): their Rings and Builders, measured
// after a GC with the Router still referenced. It reports MiB/router and
// KiB/service.
func BenchmarkServicesMemory(b *testing.B) {
	const services, instances = 1000, 8
	live := make(map[string][]string, services)
	for i := range services {
		svc := fmt.Sprintf("svc%d", i)
		live[svc] = names(svc, instances)
	}
	var total int64
	for b.Loop() {
		base := heapInUse()
		r, err := router.New(ring.DefaultSettings(), "svc0")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := r.Update(live); err != nil {
			b.Fatal(err)
		}
		total += heapInUse() - base
		runtime.KeepAlive(r)
	}
	perRouter := float64(total) / float64(b.N)
	b.ReportMetric(perRouter/(1<<20), "MiB/router")
	b.ReportMetric(perRouter/services/(1<<10), "KiB/service")
}

// heapInUse is the live heap after a full collection.
func heapInUse() int64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
