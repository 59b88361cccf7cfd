package discovery

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// A query's outcome per member: the answer of those that answer, and why
// not for the others, each error matching its sentinel.
func TestMemberQueryOutcomes(t *testing.T) {
	table := newMemberTable("self", time.Hour, 0)
	for name, status := range map[string]Status{
		"self": StatusAlive, "answers": StatusAlive, "draining": StatusDraining,
		"unreachable": StatusAlive, "failed": StatusFailed, "left": StatusLeft,
	} {
		table.members[name] = &member{name: name, addr: "127.0.0.1:1", status: status}
	}
	var q *memberQuery[string]
	send := func(to *memberlist.Node, msg []byte) error {
		id := binary.BigEndian.Uint64(msg)
		switch to.Name {
		case "unreachable":
			return errors.New("connection refused")
		case "silent":
			return nil
		}
		q.deliver(id, to.Name, "hello from "+to.Name)
		q.deliver(id, to.Name, "a duplicate")
		return nil
	}
	done := make(chan struct{})
	q = newMemberQuery[string](table, send, done)
	request := func(id uint64) []byte { return binary.BigEndian.AppendUint64(nil, id) }
	// No deadline to reach: ask returns once every member has answered or
	// cannot be reached.
	out := q.ask(context.Background(), time.Hour, request)
	want := map[string]error{
		"answers": nil, "draining": nil, "unreachable": errUnreachable,
		"failed": errMemberFailed, "left": errMemberLeft,
	}
	if len(out) != len(want) {
		t.Fatalf("%d outcomes, want %d: %+v", len(out), len(want), out)
	}
	for i, o := range out {
		if i > 0 && out[i-1].name >= o.name {
			t.Errorf("outcomes not sorted by name: %q before %q", out[i-1].name, o.name)
		}
		w, ok := want[o.name]
		switch {
		case !ok:
			t.Errorf("outcome for %q, which is not another member", o.name)
		case w == nil && (o.err != nil || o.answer != "hello from "+o.name):
			t.Errorf("%s: answer %q, err %v; want its first answer", o.name, o.answer, o.err)
		case w != nil && !errors.Is(o.err, w):
			t.Errorf("%s: err %v, want %v", o.name, o.err, w)
		}
		if o.addr != "127.0.0.1:1" {
			t.Errorf("%s: addr %q", o.name, o.addr)
		}
	}
	if q.deliver(1, "answers", "late") {
		t.Error("deliver found a query waiting after ask returned")
	}

	// A member that never answers: the deadline, the caller or shutdown
	// ends the wait, and the outcome says which.
	table.mu.Lock()
	table.members["silent"] = &member{name: "silent", addr: "127.0.0.1:1", status: StatusLeaving}
	table.mu.Unlock()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		ctx     context.Context
		timeout time.Duration
		close   bool
		want    string
	}{
		{context.Background(), time.Millisecond, false, "no answer within 1ms"},
		{cancelled, time.Hour, false, "no answer before the request was cancelled"},
		{context.Background(), time.Hour, true, "no answer before this node shut down"},
	} {
		if tc.close {
			close(done)
		}
		found := false
		for _, o := range q.ask(tc.ctx, tc.timeout, request) {
			if o.name == "silent" {
				found = true
				if !errors.Is(o.err, errNoAnswer) || o.err.Error() != tc.want {
					t.Errorf("silent: %v; want %q", o.err, tc.want)
				}
			}
		}
		if !found {
			t.Errorf("no outcome for silent (want %q)", tc.want)
		}
	}
}
