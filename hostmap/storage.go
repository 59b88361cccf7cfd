package hostmap

import (
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// commitLocked writes entries in one bbolt transaction (fsynced), then
// applies them in memory and publishes the index.
func (t *Table) commitLocked(entries []Entry) error {
	// bbolt inserts keys in order cheaply and out of order at a cost that
	// grows with the transaction (it copies nodes): sort first.
	entries = slices.SortedFunc(slices.Values(entries), func(a, b Entry) int { return strings.Compare(a.Host, b.Host) })
	err := t.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOverrides)
		for _, e := range entries {
			if err := b.Put([]byte(e.Host), encodeValue(e)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store overrides: %w", err)
	}
	hosts := make([]string, len(entries))
	for i, e := range entries {
		t.entries[e.Host] = e
		hosts[i] = e.Host
	}
	t.publishLocked(hosts)
	return nil
}

// update runs fn in a write transaction and reports its duration to
// Options.OnCommit.
func (t *Table) update(fn func(*bolt.Tx) error) error {
	start := time.Now()
	err := t.db.Update(fn)
	if t.opts.OnCommit != nil {
		t.opts.OnCommit(time.Since(start))
	}
	return err
}

// collectLoop drops tombstones older than TombstoneTTL.
func (t *Table) collectLoop() {
	defer t.wg.Done()
	tick := time.NewTicker(min(time.Hour, t.opts.TombstoneTTL/4))
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-tick.C:
			if n, err := t.collect(); err != nil {
				t.log.Error("cannot collect override tombstones", "err", err)
			} else if n > 0 {
				t.log.Debug("override tombstones collected", "count", n)
			}
		}
	}
}

func (t *Table) collect() (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var old []string
	for h, e := range t.entries {
		if e.Backend == "" && t.expired(e) {
			old = append(old, h)
		}
	}
	if len(old) == 0 {
		return 0, nil
	}
	err := t.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOverrides)
		for _, h := range old {
			if err := b.Delete([]byte(h)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, h := range old {
		delete(t.entries, h)
	}
	t.state = nil
	return len(old), nil
}
