package hostmap

import (
	"sync"
	"testing"
	"time"
)

// Every write transaction is reported to OnCommit: the open, each set or
// delete, each merge from another node.
func TestCommitHook(t *testing.T) {
	var mu sync.Mutex
	var took []time.Duration
	record := func(d time.Duration) { mu.Lock(); took = append(took, d); mu.Unlock() }
	commits := func() int { mu.Lock(); defer mu.Unlock(); return len(took) }
	tb, _ := openTable(t, "n1", func(o *Options) { o.OnCommit = record })
	if n := commits(); n != 1 {
		t.Fatalf("%d commits reported by Open, want 1 (the bucket)", n)
	}
	if _, err := tb.Set("a.example.com", "10.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.SetMany([]Pair{{"b.example.com", "10.0.0.2:1"}, {"c.example.com", "10.0.0.3:1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Delete("a.example.com"); err != nil {
		t.Fatal(err)
	}
	tb.Delete("nosuch.example.com") // nothing to write
	other, _ := openTable(t, "n2", nil)
	other.Set("d.example.com", "10.0.0.4:1")
	tb.MergeState(other.LocalState())
	waitFor(t, 5*time.Second, func() (bool, string) {
		_, ok := tb.Get("d.example.com")
		return ok, "the merged state's override is not in the table"
	})
	mu.Lock()
	defer mu.Unlock()
	if len(took) != 5 {
		t.Fatalf("%d commits reported (%v), want 5: open, set, bulk set, delete, merge", len(took), took)
	}
	for i, d := range took {
		if d <= 0 {
			t.Errorf("commit %d took %v, want a positive duration", i, d)
		}
	}
}

// A change from another node is reported once, when it is applied here,
// with the time since its write on its origin by that node's clock; what
// is queued or being merged shows in PendingSince until it is applied.
func TestReplicationDelayAndPending(t *testing.T) {
	t0 := time.UnixMilli(time.Now().UnixMilli()) // versions keep milliseconds
	var mu sync.Mutex
	now := t0.Add(1500 * time.Millisecond) // b's clock runs 1.5 s after a's write
	var delays []time.Duration
	a, _ := openTable(t, "a", func(o *Options) { o.now = func() time.Time { return t0 } })
	b, bst := openTable(t, "b", func(o *Options) {
		o.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		o.OnReplicated = func(d time.Duration) { mu.Lock(); delays = append(delays, d); mu.Unlock() }
	})
	var msgs [][]byte
	a.SetBroadcast(func(_ string, msg []byte) { msgs = append(msgs, msg) })
	if _, err := a.Set("x.example.com", "10.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	if !b.PendingSince().IsZero() {
		t.Fatalf("PendingSince = %v with nothing received, want zero", b.PendingSince())
	}

	// Hold b's data file: the merge waits for its commit.
	tx, err := bst.DB().Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	b.MergeMessage(msgs[0])
	b.MergeMessage(msgs[0]) // a duplicate: applied once, reported once
	b.MergeState(a.LocalState())
	pending := b.PendingSince()
	if pending.Before(sent) || pending.After(time.Now()) {
		t.Errorf("PendingSince = %v while the merge waits, want when the first message arrived (after %v)", pending, sent)
	}
	tx.Rollback()
	waitFor(t, 5*time.Second, func() (bool, string) {
		_, ok := b.Get("x.example.com")
		return ok && b.PendingSince().IsZero(), "the change is not applied, or PendingSince is not zero"
	})
	mu.Lock()
	if len(delays) != 1 || delays[0] != 1500*time.Millisecond {
		t.Errorf("replication delays %v, want one of 1.5s", delays)
	}
	mu.Unlock()

	// A change this node already has is not reported again.
	b.MergeState(a.LocalState())
	b.MergeMessage(msgs[0])
	waitFor(t, 5*time.Second, func() (bool, string) {
		return b.PendingSince().IsZero(), "PendingSince is not zero"
	})
	mu.Lock()
	defer mu.Unlock()
	if len(delays) != 1 {
		t.Errorf("replication delays %v after old news, want still one", delays)
	}
}

// A change lost on the way in (the merge queue was full) stays pending
// until a full state received after the loss is merged.
func TestPendingKeepsLostChanges(t *testing.T) {
	a, _ := openTable(t, "a", nil)
	b, bst := openTable(t, "b", nil)
	var msgs [][]byte
	a.SetBroadcast(func(_ string, msg []byte) { msgs = append(msgs, msg) })
	if _, err := a.Set("x.example.com", "10.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	tx, err := bst.DB().Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	// The merge takes at most mergeBatch and waits for the data file;
	// the queue holds messageQueue more; the rest is dropped.
	for range mergeBatch + messageQueue + 10 {
		b.MergeMessage(msgs[0])
	}
	tx.Rollback()
	waitFor(t, 5*time.Second, func() (bool, string) {
		b.pendingMu.Lock()
		defer b.pendingMu.Unlock()
		return len(b.pending) == 0, "messages still queued"
	})
	lost := b.PendingSince()
	if lost.IsZero() {
		t.Fatal("PendingSince is zero after messages were dropped from a full queue")
	}
	if _, ok := b.Get("x.example.com"); !ok {
		t.Fatal("the change did not arrive at all")
	}
	if again := b.PendingSince(); !again.Equal(lost) {
		t.Errorf("PendingSince moved from %v to %v without a state exchange", lost, again)
	}
	b.MergeState(a.LocalState())
	waitFor(t, 5*time.Second, func() (bool, string) {
		return b.PendingSince().IsZero(), "PendingSince not zero after a full state was merged"
	})
}
