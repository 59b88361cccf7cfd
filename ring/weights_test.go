package ring

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
)

func instancesN(n int) []Instance {
	out := make([]Instance, n)
	for i := range out {
		out[i] = Instance{Addr: fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250+1)}
	}
	return out
}

func buildInstances(t *testing.T, insts []Instance) *Ring {
	t.Helper()
	b, err := NewBuilder(DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	r, err := b.BuildInstances(insts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Weight-1 instances, with or without their address as ID, place every
// partition where the unweighted ring does: no key moves on upgrade.
func TestEqualWeightsArePlacementUnchanged(t *testing.T) {
	for _, n := range []int{1, 3, 10, 100} {
		insts := instancesN(n)
		addrs := make([]string, n)
		for i, in := range insts {
			addrs[i] = in.Addr
		}
		plain, err := New(DefaultSettings(), addrs)
		if err != nil {
			t.Fatal(err)
		}
		for i := range insts {
			insts[i].Weight = 1
			if i%2 == 0 {
				insts[i].ID = insts[i].Addr
			}
		}
		weighted := buildInstances(t, insts)
		if !slices.Equal(table(plain), table(weighted)) || !slices.Equal(plain.owned, weighted.owned) {
			t.Errorf("%d instances: weight 1 placed keys differently", n)
		}
		if weighted.ids != nil || weighted.weights != nil {
			t.Errorf("%d instances: a ring of plain instances keeps ids or weights", n)
		}
	}
}

// Weights 1:2:3 share the partitions 1/6:2/6:3/6: on average over rings
// within 5%, as closely as the points allow in each ring (256 per unit of
// weight, the precision of an unweighted ring: a relative standard deviation
// of about 1/sqrt(256 × weight)), and never above the load cap.
func TestWeightsShareThePartitions(t *testing.T) {
	const rings = 20
	weights := []float64{1, 2, 3}
	var sum [3]float64
	for seed := range rings {
		insts := make([]Instance, len(weights))
		for i, w := range weights {
			insts[i] = Instance{Addr: fmt.Sprintf("10.1.%d.%d:80", seed, i+1), Weight: w}
		}
		r := buildInstances(t, insts)
		owned := r.Owned()
		for i, in := range insts {
			got := float64(owned[in.Addr]) / float64(r.Partitions())
			sum[i] += got
			want := in.Weight / 6
			if got > want*DefaultLoad+1e-3 || math.Abs(got-want) > 0.25*want {
				t.Errorf("seed %d: weight %g owns %.4f of the partitions, want %.4f ± 25%% and at most the cap", seed, in.Weight, got, want)
			}
		}
		for i, in := range r.Describe() {
			if in.Addr != r.Instances()[i] || in.ID != in.Addr || in.Weight != insts[i].Weight {
				t.Errorf("Describe()[%d] = %+v", i, in)
			}
		}
	}
	for i, w := range weights {
		if got, want := sum[i]/rings, w/6; math.Abs(got-want) > 0.05*want {
			t.Errorf("weight %g owns %.4f of the partitions on average over %d rings, want %.4f ± 5%%", w, got, rings, want)
		}
	}
}

// Changing one weight moves no more than 1.3x the keys that must move: the
// difference of that instance's share.
func TestWeightChangeMovesLittle(t *testing.T) {
	for _, n := range []int{5, 10, 50} {
		for _, change := range []struct{ from, to float64 }{{1, 2}, {2, 1}, {1, 3}, {1, 0.5}} {
			insts := instancesN(n)
			insts[0].Weight = change.from
			b, err := NewBuilder(DefaultSettings())
			if err != nil {
				t.Fatal(err)
			}
			before, err := b.BuildInstances(insts)
			if err != nil {
				t.Fatal(err)
			}
			insts[0].Weight = change.to
			after, err := b.BuildInstances(insts)
			if err != nil {
				t.Fatal(err)
			}
			rest := float64(n - 1)
			ideal := math.Abs(change.to/(rest+change.to) - change.from/(rest+change.from))
			if moved := Moved(before, after); moved > 1.3*ideal {
				t.Errorf("%d instances, weight %g -> %g: %.4f of the keys moved, ideal %.4f (limit 1.3x)", n, change.from, change.to, moved, ideal)
			}
			fresh := buildInstances(t, insts)
			if !slices.Equal(table(fresh), table(after)) {
				t.Errorf("%d instances, weight %g -> %g: the rebuilt ring differs from a fresh one", n, change.from, change.to)
			}
		}
	}
}

// An instance that comes back at a new address with its ID keeps every key.
func TestIDKeepsKeysAcrossAddresses(t *testing.T) {
	insts := instancesN(10)
	for i := range insts {
		insts[i].ID = fmt.Sprintf("web-%d", i)
	}
	b, err := NewBuilder(DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	before, err := b.BuildInstances(insts)
	if err != nil {
		t.Fatal(err)
	}
	old := insts[3].Addr
	insts[3].Addr = "192.168.9.9:8080"
	after, err := b.BuildInstances(insts)
	if err != nil {
		t.Fatal(err)
	}
	if m := Moved(before, after); m != 0 {
		t.Errorf("a new address with the same ID moved %.4f of the keys", m)
	}
	beforeRows, afterRows := table(before), table(after)
	for p := range beforeRows {
		want := beforeRows[p]
		if want == old {
			want = insts[3].Addr
		}
		if afterRows[p] != want {
			t.Fatalf("entry %d: %s, want %s", p, afterRows[p], want)
		}
	}
	if fresh := buildInstances(t, insts); !slices.Equal(table(fresh), table(after)) {
		t.Error("the rebuilt ring differs from a fresh one")
	}
	if slices.Contains(after.Instances(), old) || after.Owned()[insts[3].Addr] != before.Owned()[old] {
		t.Errorf("instances %v, owned %v", after.Instances(), after.Owned())
	}
	// Without IDs, the same change moves the instance's keys.
	plainBefore := buildInstances(t, instancesN(10))
	moved := instancesN(10)
	moved[3].Addr = "192.168.9.9:8080"
	if m := Moved(plainBefore, buildInstances(t, moved)); m < 0.05 {
		t.Errorf("a new address without ID moved only %.4f of the keys", m)
	}
}

func TestBuildInstancesRefusesConflicts(t *testing.T) {
	b, err := NewBuilder(DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		insts []Instance
		want  error
	}{
		{[]Instance{{Addr: "a:1", ID: "x"}, {Addr: "b:1", ID: "x"}}, ErrDuplicateInstance},
		{[]Instance{{Addr: "a:1", ID: "x"}, {Addr: "a:1", ID: "y"}}, ErrDuplicateInstance},
		{[]Instance{{Addr: "a:1", Weight: 1}, {Addr: "a:1", Weight: 2}}, ErrDuplicateInstance},
		{[]Instance{{Addr: ""}}, ErrInvalidInstance},
		{[]Instance{{Addr: "a:1", Weight: -1}}, nil},
		{[]Instance{{Addr: "a:1", Weight: MaxWeight + 1}}, nil},
		{[]Instance{{Addr: "a:1", Weight: math.NaN()}}, nil},
	} {
		r, err := b.BuildInstances(tc.insts)
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%+v: ring %v, error %v; want %v", tc.insts, r, err, tc.want)
		}
	}
	// Exact duplicates are one instance.
	r, err := b.BuildInstances([]Instance{{Addr: "a:1", ID: "x"}, {Addr: "a:1", ID: "x", Weight: 1}})
	if err != nil || r.Len() != 1 {
		t.Errorf("exact duplicates: %v, %v", r.Instances(), err)
	}
}

// A slow start ramps a joiner's weight up in steps: each step only hands
// keys to it (none goes back, none moves between the others), and after
// the last it owns what a plain join gives.
func TestRampMovesKeysOneWay(t *testing.T) {
	for _, n := range []int{3, 10, 50} {
		old := instancesN(n)
		b, err := NewBuilder(DefaultSettings())
		if err != nil {
			t.Fatal(err)
		}
		prev, err := b.BuildInstances(old)
		if err != nil {
			t.Fatal(err)
		}
		const steps = 10
		joiner := Instance{Addr: "10.9.9.9:8080"}
		for step := 1; step <= steps; step++ {
			joiner.Weight = float64(step) / steps
			next, err := b.BuildInstances(append(slices.Clone(old), joiner))
			if err != nil {
				t.Fatal(err)
			}
			back, between := 0, 0
			prevRows, nextRows := table(prev), table(next)
			for p := range int(next.partitions) {
				was, now := prevRows[p*prev.width], nextRows[p*next.width]
				switch {
				case was == now:
				case was == joiner.Addr:
					back++
				case now != joiner.Addr:
					between++
				}
			}
			if back+between > 0 {
				t.Errorf("%d instances, step %d: %d partitions left the joiner, %d moved between the others", n, step, back, between)
			}
			prev = next
		}
		plain := buildInstances(t, append(slices.Clone(old), Instance{Addr: joiner.Addr}))
		if !slices.Equal(table(plain), table(prev)) {
			t.Errorf("%d instances: the last step differs from a plain join", n)
		}
	}
}
