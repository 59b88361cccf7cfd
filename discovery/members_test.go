package discovery

import (
	"testing"
	"time"
)

// The member table on its own: statuses from metadata and events, what
// counts as a change, the resync record and the refusal log's rate limit.
func TestMemberTableRecord(t *testing.T) {
	now := time.Now()
	table := newMemberTable("self", time.Hour, time.Minute)
	web := &meta{Fingerprint: "fp", Services: map[string][]string{"web": {"h:1"}}}
	draining := &meta{Fingerprint: "fp", Draining: true, Services: web.Services}
	leaving := &meta{Fingerprint: "fp", Leaving: true, Services: web.Services}
	steps := []struct {
		name    string
		m       *meta
		gone    bool
		changed bool
		want    Status
	}{
		{"unknown with unreadable metadata", nil, false, false, ""},
		{"joins", web, false, true, StatusAlive},
		{"the same again", web, false, false, StatusAlive},
		{"unreadable metadata keeps what it had", nil, false, false, StatusAlive},
		{"drains", draining, false, true, StatusDraining},
		{"undrains", web, false, true, StatusAlive},
		{"fails", web, true, true, StatusFailed},
		{"comes back", web, false, true, StatusAlive},
		{"announces its leave", leaving, false, true, StatusLeaving},
		{"leaves", leaving, true, true, StatusLeft},
	}
	for i, s := range steps {
		at := now.Add(time.Duration(i) * time.Minute)
		if got := table.record("b", "127.0.0.1:2", s.m, s.gone, at); got != s.changed {
			t.Errorf("%s: changed = %v, want %v", s.name, got, s.changed)
		}
		var status Status
		for _, m := range table.list(at) {
			if m.Name == "b" {
				status = m.Status
			}
		}
		if status != s.want {
			t.Errorf("%s: status %q, want %q", s.name, status, s.want)
		}
	}
	u := table.takeUpdate()
	if len(u.changes) != 7 || u.dropped != 0 {
		t.Errorf("%d changes (%d dropped), want 7", len(u.changes), u.dropped)
	}
	if u = table.takeUpdate(); len(u.changes) != 0 {
		t.Errorf("%d changes taken twice", len(u.changes))
	}
}

func TestMemberTableResync(t *testing.T) {
	now := time.Now()
	web := &meta{Fingerprint: "fp"}
	for _, tc := range []struct {
		name        string
		resyncAfter time.Duration
		exchanged   bool
		want        bool
	}{
		{"recovered member", time.Minute, false, true},
		{"without shared state", 0, false, false},
		{"right after an exchange", time.Minute, true, false},
	} {
		table := newMemberTable("self", time.Hour, tc.resyncAfter)
		table.record("b", "127.0.0.1:2", web, false, now)
		table.record("b", "127.0.0.1:2", web, true, now.Add(time.Second))
		if tc.exchanged {
			table.exchanged(now.Add(2 * time.Second))
		}
		table.record("b", "127.0.0.1:2", web, false, now.Add(3*time.Second))
		failed, r := table.reconnectTargets()
		if len(failed) != 0 {
			t.Errorf("%s: failed members %v after it came back", tc.name, failed)
		}
		if got := r.addr == "127.0.0.1:2"; got != tc.want {
			t.Errorf("%s: resync %+v, want one: %v", tc.name, r, tc.want)
		}
		if tc.want && r.down != 2*time.Second {
			t.Errorf("%s: down %v, want 2s", tc.name, r.down)
		}
		table.exchanged(now.Add(4 * time.Second))
		if _, r := table.reconnectTargets(); r.addr != "" {
			t.Errorf("%s: resync %+v left after an exchange", tc.name, r)
		}
	}
}

func TestMemberTableFirstRefusal(t *testing.T) {
	now := time.Now()
	table := newMemberTable("self", time.Hour, 0)
	for _, s := range []struct {
		fp    string
		after time.Duration
		want  bool
	}{
		{"fp-2", 0, true},
		{"fp-2", time.Minute, false},
		{"fp-3", 2 * time.Minute, true},
		{"fp-3", 12*time.Minute + time.Second, true},
	} {
		if got := table.firstRefusal("rogue", s.fp, now.Add(s.after)); got != s.want {
			t.Errorf("refusal of %s after %v: log it = %v, want %v", s.fp, s.after, got, s.want)
		}
	}
}
