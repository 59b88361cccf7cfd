package tablefile_test

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"ringman/ring"
	"ringman/router"
	"ringman/tablefile"
)

// bigExport is a large service: the default 16,381 partitions × 8
// candidates over 1,000 instances, and 100,000 overrides (a tenth of them
// wildcards).
func bigExport() *router.Export {
	rng := rand.New(rand.NewPCG(1, 2))
	e := &router.Export{Epoch: 42, Hash: "xxhash64", Partitions: ring.DefaultPartitions, Width: 8}
	for i := range 1000 {
		e.Instances = append(e.Instances, fmt.Sprintf("10.%d.%d.%d:8080", i/65536, i/256%256, i%256))
	}
	sort.Strings(e.Instances)
	e.Table = make([]uint32, e.Partitions*e.Width)
	for i := range e.Table {
		e.Table[i] = uint32(rng.IntN(len(e.Instances)))
	}
	for i := range 100000 {
		h := fmt.Sprintf("site%06d.customer%d.example.com", i, i%97)
		if i%10 == 0 {
			h = fmt.Sprintf("*.tenant%06d.example.net", i)
		}
		e.OverrideHosts = append(e.OverrideHosts, h)
	}
	sort.Strings(e.OverrideHosts)
	for i := range e.OverrideHosts {
		e.OverrideBackends = append(e.OverrideBackends, fmt.Sprintf("10.200.%d.%d:443", i/256%256, i%256))
	}
	return e
}

// go test -run XXX -bench 'Encode|Decode|WriteFile' -benchmem ./tablefile/
func BenchmarkEncode(b *testing.B) {
	e := bigExport()
	var size int
	for b.Loop() {
		buf, err := tablefile.Encode(e)
		if err != nil {
			b.Fatal(err)
		}
		size = len(buf)
	}
	b.ReportMetric(float64(size), "file-bytes")
}

func BenchmarkDecode(b *testing.B) {
	buf, err := tablefile.Encode(bigExport())
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := tablefile.Decode(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteFile is a whole write: encode, write, fsync, rename, fsync
// of the directory (on the test's temporary file system).
func BenchmarkWriteFile(b *testing.B) {
	e, dir := bigExport(), b.TempDir()
	for b.Loop() {
		if err := tablefile.WriteFile(dir, "web", e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPassUnchanged is what the writer costs every 100 ms when
// nothing changed: a cached Export and an epoch comparison per service
// (three services with rings, overrides set).
func BenchmarkPassUnchanged(b *testing.B) {
	f := newFixture(b)
	if _, err := f.r.Update(map[string][]string{"web": {"10.0.0.1:80", "10.0.0.2:80"}, "img": {"10.0.1.1:80"}, "api": {"10.0.2.1:80"}}); err != nil {
		b.Fatal(err)
	}
	f.set(b, testOverrides...)
	w, err := tablefile.NewWriter(tablefile.WriterConfig{Dir: b.TempDir(), Router: f.r, Services: []string{"web", "thumbs"}})
	if err != nil {
		b.Fatal(err)
	}
	w.Pass()
	b.ReportAllocs()
	for b.Loop() {
		w.Pass()
	}
}
