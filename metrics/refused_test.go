package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"ringman/hostmap"
	"ringman/store"
)

// Entries refused for a version too far ahead are counted.
func TestOverrideVersionsRefused(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tb, err := hostmap.Open(st.DB(), hostmap.Options{Node: "n1", MaxClockOffset: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	ahead := uint64(time.Now().Add(time.Hour).UnixMilli()) << 16
	tb.Merge([]hostmap.Entry{
		{Host: "a.com", Backend: "h:1", Version: hostmap.Version{Clock: ahead, Node: "far"}},
		{Host: "b.com", Backend: "h:1", Version: hostmap.Version{Clock: 1 << 63, Node: "far"}},
		{Host: "c.com", Backend: "h:1", Version: hostmap.Version{Clock: uint64(time.Now().UnixMilli()) << 16, Node: "near"}},
	})
	m := New()
	reg := prometheus.NewRegistry()
	if err := m.Register(reg, Sources{Overrides: tb}); err != nil {
		t.Fatal(err)
	}
	fams := gather(t, reg)
	if got := sample(fams, "ringman_override_versions_refused_total", "", ""); got != 2 {
		t.Errorf("ringman_override_versions_refused_total = %v, want 2", got)
	}
	if got := sample(fams, "ringman_overrides", "", ""); got != 1 {
		t.Errorf("ringman_overrides = %v, want 1", got)
	}
}
