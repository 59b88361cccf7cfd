package router_test

import (
	"slices"
	"testing"

	"ringman/ring"
)

// TestUpdateInstances: an instance restarted at a new address with its ID
// keeps every key; a weight change is reported as such; two nodes
// advertising one ID or one address differently leave one instance in, the
// same one on every node.
func TestUpdateInstances(t *testing.T) {
	r := newRouter(t)
	set := []ring.Instance{{Addr: "10.0.0.1:80", ID: "a"}, {Addr: "10.0.0.2:80", ID: "b"}, {Addr: "10.0.0.3:80", ID: "c"}}
	if _, err := r.UpdateInstances(map[string][]ring.Instance{"web": set}); err != nil {
		t.Fatal(err)
	}
	before := map[string]string{}
	for _, k := range keys {
		before[string(k)], _ = r.Lookup("web", k)
	}

	set[1].Addr = "10.0.9.2:80"
	changes, err := r.UpdateInstances(map[string][]ring.Instance{"web": set})
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].Moved != 0 || !slices.Equal(changes[0].Added, []string{"10.0.9.2:80"}) || !slices.Equal(changes[0].Removed, []string{"10.0.0.2:80"}) {
		t.Fatalf("new address, same ID: changes %+v; want 10.0.0.2 -> 10.0.9.2 with 0 keys moved", changes)
	}
	for _, k := range keys {
		got, _ := r.Lookup("web", k)
		want := before[string(k)]
		if want == "10.0.0.2:80" {
			want = "10.0.9.2:80"
		}
		if got != want {
			t.Fatalf("%s: %s, want %s", k, got, want)
		}
	}

	set[0].Weight = 3
	changes, _ = r.UpdateInstances(map[string][]ring.Instance{"web": set})
	if len(changes) != 1 || !slices.Equal(changes[0].Reweighted, []string{"10.0.0.1:80"}) || len(changes[0].Added)+len(changes[0].Removed) != 0 || changes[0].Moved == 0 {
		t.Errorf("weight change: %+v", changes)
	}

	// Both orders of one conflicting set give one ring.
	conflicting := append(slices.Clone(set), ring.Instance{Addr: "10.0.0.4:80", ID: "a"}, ring.Instance{Addr: "10.0.0.3:80", ID: "d"})
	r, other := newRouter(t), newRouter(t)
	reversed := slices.Clone(conflicting)
	slices.Reverse(reversed)
	c1, err1 := r.UpdateInstances(map[string][]ring.Instance{"web": conflicting})
	c2, err2 := other.UpdateInstances(map[string][]ring.Instance{"web": reversed})
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	want := []string{"10.0.0.4:80 (id a, weight 1)", "10.0.0.3:80 (id d, weight 1)"} // in ID order
	if !slices.Equal(c1[0].Conflicts, want) || !slices.Equal(c2[0].Conflicts, want) {
		t.Errorf("conflicts %v and %v, want %v", c1[0].Conflicts, c2[0].Conflicts, want)
	}
	if !slices.Equal(r.Ring("web").IndexTable(), other.Ring("web").IndexTable()) || !slices.Equal(r.Ring("web").Instances(), other.Ring("web").Instances()) {
		t.Error("two routers given one conflicting set in two orders built different rings")
	}
}
