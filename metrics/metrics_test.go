package metrics

import (
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"ringman/discovery"
	"ringman/ring"
	"ringman/router"
)

func gather(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

// sample is the value of name{label=value} (or of the only sample when
// label is ""); -1 when there is none.
func sample(fams map[string]*dto.MetricFamily, name, label, value string) float64 {
	for _, m := range fams[name].GetMetric() {
		if label != "" && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == label && l.GetValue() == value }) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
	}
	return -1
}

// Ring changes: every change counts; only rebuilds set the duration; a
// service that had a ring, or is named in Sources, stays exported with 0
// instances when it has none.
func TestRingsChanged(t *testing.T) {
	b, err := ring.NewBuilder(ring.DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	web, err := b.BuildInstances([]ring.Instance{{Addr: "10.0.0.1:80"}, {Addr: "10.0.0.2:80", Weight: 3}})
	if err != nil {
		t.Fatal(err)
	}
	rings := map[string]*ring.Ring{"web": web}
	m := New()
	reg := prometheus.NewRegistry()
	if err := m.Register(reg, Sources{Rings: func() map[string]*ring.Ring { return rings }, Services: []string{"web", "thumbs"}}); err != nil {
		t.Fatal(err)
	}
	m.RingsChanged([]router.Change{
		{Service: "web", Added: []string{"10.0.0.1:80", "10.0.0.2:80"}, Moved: 1, Took: 5 * time.Millisecond},
		{Service: "img", Added: []string{"10.0.1.1:80"}, Moved: 1, Took: 2 * time.Millisecond},
	}, map[string][]string{"web": {"10.0.0.1:80", "10.0.0.2:80"}, "img": {"10.0.1.1:80"}})
	m.RingsChanged([]router.Change{{Service: "img", Removed: []string{"10.0.1.1:80"}, Moved: 1}}, map[string][]string{"web": {"10.0.0.1:80", "10.0.0.2:80"}})
	m.RingsChanged([]router.Change{{Service: "web", Removed: []string{"10.0.0.2:80"}, Moved: 0.5, Took: 3 * time.Millisecond}}, map[string][]string{"web": {"10.0.0.1:80"}})
	fams := gather(t, reg)
	for _, tc := range []struct {
		name, service string
		want          float64
	}{
		{"ringman_ring_rebuilds_total", "web", 2},
		{"ringman_ring_rebuilds_total", "img", 2},
		{"ringman_ring_rebuild_duration_seconds", "web", 0.003},
		{"ringman_ring_rebuild_duration_seconds", "img", 0.002}, // its removal is no rebuild
		{"ringman_ring_keys_moved_ratio", "web", 0.5},
		{"ringman_ring_keys_moved_ratio", "img", 1},
		{"ringman_ring_instances", "web", 2},
		{"ringman_ring_instances", "img", 0},
		{"ringman_ring_instances", "thumbs", 0},
	} {
		if got := sample(fams, tc.name, "service", tc.service); got != tc.want {
			t.Errorf("%s{service=%q} = %v, want %v", tc.name, tc.service, got, tc.want)
		}
	}
	// Per instance: the weight placed with, and the partitions owned.
	owned := web.Owned()
	for _, in := range []struct {
		addr   string
		weight float64
	}{{"10.0.0.1:80", 1}, {"10.0.0.2:80", 3}} {
		if got := sample(fams, "ringman_ring_instance_weight", "instance", in.addr); got != in.weight {
			t.Errorf("ringman_ring_instance_weight{instance=%q} = %v, want %v", in.addr, got, in.weight)
		}
		if got := sample(fams, "ringman_ring_instance_partitions", "instance", in.addr); got != float64(owned[in.addr]) {
			t.Errorf("ringman_ring_instance_partitions{instance=%q} = %v, want %d", in.addr, got, owned[in.addr])
		}
	}
	// Sources left nil export nothing.
	for _, name := range []string{"ringman_lookups_total", "ringman_members", "ringman_overrides", "ringman_resp_connections"} {
		if fams[name] != nil {
			t.Errorf("%s exported without its source", name)
		}
	}
}

// The health check's gauges follow its state, and are absent without one;
// configured weights come from the live instances.
func TestCheckGauges(t *testing.T) {
	st, has := discovery.CheckState{Passing: false, Failures: 4}, true
	reg := prometheus.NewRegistry()
	live := func() map[string][]string {
		return map[string][]string{"web": {"10.0.0.1:80,id=a,weight=3,ramp=1/10", "10.0.0.2:80"}}
	}
	if err := New().Register(reg, Sources{Check: func() (discovery.CheckState, bool) { return st, has }, Live: live}); err != nil {
		t.Fatal(err)
	}
	fams := gather(t, reg)
	if w1, w2 := sample(fams, "ringman_instance_weight", "instance", "10.0.0.1:80"), sample(fams, "ringman_instance_weight", "instance", "10.0.0.2:80"); w1 != 3 || w2 != 1 {
		t.Errorf("ringman_instance_weight: %v and %v, want 3 and 1", w1, w2)
	}
	if p, f := fams["ringman_check_passing"].GetMetric()[0].GetGauge().GetValue(), fams["ringman_check_failures_in_a_row"].GetMetric()[0].GetGauge().GetValue(); p != 0 || f != 4 {
		t.Errorf("failing check: passing %v, failures %v; want 0 and 4", p, f)
	}
	st = discovery.CheckState{Passing: true, Passes: 2}
	if p := gather(t, reg)["ringman_check_passing"].GetMetric()[0].GetGauge().GetValue(); p != 1 {
		t.Errorf("passing check: ringman_check_passing %v, want 1", p)
	}
	has = false
	if fams := gather(t, reg); fams["ringman_check_passing"] != nil {
		t.Error("ringman_check_passing exported by a node without a check")
	}
}

// A replication delay made negative by clock skew counts as 0.
func TestObserveReplicationClampsSkew(t *testing.T) {
	m := New()
	reg := prometheus.NewRegistry()
	if err := m.Register(reg, Sources{}); err != nil {
		t.Fatal(err)
	}
	m.ObserveReplication(-2 * time.Second)
	m.ObserveReplication(1500 * time.Millisecond)
	h := gather(t, reg)["ringman_override_replication_delay_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 2 || h.GetSampleSum() != 1.5 {
		t.Errorf("%d samples, sum %v; want 2 and 1.5", h.GetSampleCount(), h.GetSampleSum())
	}
	if b := h.GetBucket()[0]; b.GetUpperBound() != 0.001 || b.GetCumulativeCount() != 1 {
		t.Errorf("first bucket le=%v holds %d, want the skewed sample in le=0.001", b.GetUpperBound(), b.GetCumulativeCount())
	}
}
