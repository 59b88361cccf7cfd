package ring

import (
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/buraksezer/consistent"
)

// Lookups read keys from a pool built before the timer starts; its size is a
// power of two so the loop masks its counter.
const benchKeyMask = 1<<12 - 1

var (
	benchKeys      = makeBenchKeys()
	benchKeysBytes = func() [][]byte {
		out := make([][]byte, len(benchKeys))
		for i, k := range benchKeys {
			out[i] = []byte(k)
		}
		return out
	}()
	benchSink atomic.Int64 // keeps lookups from being optimised away
)

func makeBenchKeys() []string {
	out := make([]string, benchKeyMask+1)
	for i := range out {
		out[i] = "/videos/" + strconv.Itoa(i*7919) + "/segment-42.ts"
	}
	return out
}

var benchSizes = []int{10, 100, 1000}

func BenchmarkOwner(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("instances=", n), func(b *testing.B) {
			r := defaultRing(b, n)
			b.ReportAllocs()
			total, i := 0, 0
			for b.Loop() {
				s, _ := r.Owner(benchKeys[i&benchKeyMask])
				total += len(s)
				i++
			}
			benchSink.Add(int64(total))
		})
	}
}

func BenchmarkOwnerParallel(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("instances=", n), func(b *testing.B) {
			r := defaultRing(b, n)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				total, i := 0, 0
				for pb.Next() {
					s, _ := r.Owner(benchKeys[i&benchKeyMask])
					total += len(s)
					i++
				}
				benchSink.Add(int64(total))
			})
		})
	}
}

func BenchmarkCandidates(b *testing.B) {
	r := defaultRing(b, 100)
	b.ReportAllocs()
	total, i := 0, 0
	for b.Loop() {
		total += len(r.CandidatesBytes(benchKeysBytes[i&benchKeyMask], 3))
		i++
	}
	benchSink.Add(int64(total))
}

// BenchmarkRebuild is the time from a membership change to a new Ring on a
// warm Builder: each iteration is one join or one leave (alternately) of one
// instance. test/bench holds it to 20 ms up to 1,000 instances and 50 ms
// above.
func BenchmarkRebuild(b *testing.B) {
	for _, n := range []int{100, 1000, 5000, 10000} {
		b.Run(fmt.Sprint("instances=", n), func(b *testing.B) {
			if n > 1000 && raceEnabled {
				b.Skip("too slow under -race")
			}
			names := instanceNames(n + 1)
			without, with := names[:n], names
			builder, err := NewBuilder(DefaultSettings())
			if err != nil {
				b.Fatal(err)
			}
			if _, err := builder.Build(without); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				set := with
				if i%2 == 1 {
					set = without
				}
				if _, err := builder.Build(set); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkRebuildWeighted is BenchmarkRebuild with weights 1 to 4 (an
// average of 2.5: 640 points per instance) and an id on every instance, as
// a fleet of mixed machines runs it; test/bench holds it to the same goals.
func BenchmarkRebuildWeighted(b *testing.B) {
	for _, n := range []int{1000} {
		b.Run(fmt.Sprint("instances=", n), func(b *testing.B) {
			names := instanceNames(n + 1)
			all := make([]Instance, len(names))
			for i, name := range names {
				all[i] = Instance{Addr: name, ID: fmt.Sprint("id-", i), Weight: float64(1 + i%4)}
			}
			without, with := all[:n], all
			builder, err := NewBuilder(DefaultSettings())
			if err != nil {
				b.Fatal(err)
			}
			if _, err := builder.BuildInstances(without); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				set := with
				if i%2 == 1 {
					set = without
				}
				if _, err := builder.BuildInstances(set); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkNew builds a 1,000-instance ring from scratch (a cold start), for
// reference.
func BenchmarkNew(b *testing.B) {
	names := instanceNames(1000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(DefaultSettings(), names); err != nil {
			b.Fatal(err)
		}
	}
}

// The library's own lookup on the same placement, for the ratio between our
// table and consistent's map behind an RWMutex.
var (
	benchConsistentMu sync.Mutex
	benchConsistent   = map[int]*consistent.Consistent{}
)

func consistentRing(b *testing.B, n int) *consistent.Consistent {
	if n >= 1000 && raceEnabled {
		b.Skip("too slow under -race")
	}
	benchConsistentMu.Lock()
	defer benchConsistentMu.Unlock()
	if c, ok := benchConsistent[n]; ok {
		return c
	}
	s := DefaultSettings()
	c := consistent.New(members(instanceNames(n)), consistent.Config{
		Hasher: xxHasher{}, PartitionCount: s.Partitions, ReplicationFactor: s.ReplicationFactor, Load: s.Load,
	})
	benchConsistent[n] = c
	return c
}

func BenchmarkConsistentLocateKey(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("instances=", n), func(b *testing.B) {
			c := consistentRing(b, n)
			b.ReportAllocs()
			total, i := 0, 0
			for b.Loop() {
				total += len(c.LocateKey(benchKeysBytes[i&benchKeyMask]).String())
				i++
			}
			benchSink.Add(int64(total))
		})
	}
}

func BenchmarkConsistentLocateKeyParallel(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("instances=", n), func(b *testing.B) {
			c := consistentRing(b, n)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				total, i := 0, 0
				for pb.Next() {
					total += len(c.LocateKey(benchKeysBytes[i&benchKeyMask]).String())
					i++
				}
				benchSink.Add(int64(total))
			})
		})
	}
}

// BenchmarkMemory reports what a service's ring costs to keep: the heap a
// published Ring holds (B/ring) and what its Builder holds besides
// (B/builder), both measured after a GC with the Ring still referenced.
// router.BenchmarkServicesMemory is the total for 1,000 small services.
func BenchmarkMemory(b *testing.B) {
	for _, n := range []int{8, 100, 1000, 10000} {
		b.Run(fmt.Sprint("instances=", n), func(b *testing.B) {
			names := instanceNames(n)
			var ringBytes, builderBytes int64
			for b.Loop() {
				base := heapInUse()
				builder, err := NewBuilder(DefaultSettings())
				if err != nil {
					b.Fatal(err)
				}
				r, err := builder.Build(names)
				if err != nil {
					b.Fatal(err)
				}
				withBuilder := heapInUse()
				runtime.KeepAlive(builder)
				withRing := heapInUse()
				runtime.KeepAlive(r)
				ringBytes += withRing - base
				builderBytes += withBuilder - withRing
			}
			b.ReportMetric(float64(ringBytes)/float64(b.N), "B/ring")
			b.ReportMetric(float64(builderBytes)/float64(b.N), "B/builder")
		})
	}
}

// heapInUse is the live heap after a full collection.
func heapInUse() int64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
