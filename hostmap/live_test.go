package hostmap

import (
	"maps"
	"slices"
	"testing"
)

// TestLive checks the snapshot RING.TABLE exports: every live override,
// sorted, no tombstones, and a generation that moves with each change.
func TestLive(t *testing.T) {
	tb, _ := openTable(t, "n1", nil)
	gen0, seq := tb.Live()
	if n := len(maps.Collect(seq)); n != 0 {
		t.Fatalf("empty table exports %d overrides", n)
	}
	if _, err := tb.SetMany([]Pair{{"b.example.com", "10.0.0.2:2"}, {"*.a.example.com", "10.0.0.1:1"}, {"c.example.com", "10.0.0.3:3"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Delete("c.example.com"); err != nil {
		t.Fatal(err)
	}
	gen1, seq := tb.Live()
	if gen1 == gen0 {
		t.Fatalf("generation stayed %d across changes", gen1)
	}
	var hosts, backends []string
	for h, b := range seq {
		hosts, backends = append(hosts, h), append(backends, b)
	}
	if want := []string{"*.a.example.com", "b.example.com"}; !slices.Equal(hosts, want) || !slices.Equal(backends, []string{"10.0.0.1:1", "10.0.0.2:2"}) {
		t.Fatalf("Live = %q -> %q, want %q -> [10.0.0.1:1 10.0.0.2:2] (sorted, without the deleted host)", hosts, backends, want)
	}
	if gen2, _ := tb.Live(); gen2 != gen1 {
		t.Fatalf("generation moved from %d to %d without a change", gen1, gen2)
	}
}

func TestOnPublish(t *testing.T) {
	tb, _ := openTable(t, "n1", nil)
	calls := 0
	tb.SetOnPublish(func() { calls++ })
	gen, _ := tb.Live()
	if _, err := tb.Set("a.example.com", "10.0.0.1:80"); err != nil {
		t.Fatal(err)
	}
	if next, _ := tb.Live(); calls != 1 || next == gen {
		t.Errorf("after a write: %d calls, generation %d -> %d; want 1 call and a new generation", calls, gen, next)
	}
	if _, err := tb.Merge([]Entry{{Host: "b.example.com", Backend: "10.0.0.2:80", Version: Version{Clock: 1, Node: "n2"}}}); err != nil {
		t.Fatal(err)
	}
	if calls != 2 {
		t.Errorf("after a merge: %d calls, want 2", calls)
	}
}
