package redisapi

import (
	"sync/atomic"
	"time"
)

// logThrottle counts an event that someone else can repeat at will (a
// client that triggers the same panic in a loop, someone guessing
// passwords) and lets at most one log line about it through per interval:
// the log cannot be flooded, and each line carries the count since the
// previous one, so no occurrence goes unreported. It depends on nothing in
// this package, so that other packages can take it as it is.
//
// Safe for concurrent use. Set every before the first add.
type logThrottle struct {
	every  time.Duration // the least time between two lines
	count  atomic.Uint64 // occurrences so far
	logged atomic.Uint64 // count when the last line was let through
	last   atomic.Int64  // UnixNano of that line; 0 before the first
}

// add counts n occurrences. When a line is due, ok is true, since is the
// count of occurrences since the previous line (these included) and total
// the count so far; only one of concurrent callers gets ok.
func (t *logThrottle) add(n uint64) (since, total uint64, ok bool) {
	total = t.count.Add(n)
	now := time.Now().UnixNano()
	last := t.last.Load()
	if last != 0 && now-last < int64(t.every) || !t.last.CompareAndSwap(last, now) {
		return 0, total, false
	}
	return total - t.logged.Swap(total), total, true
}

// total is the count of occurrences so far.
func (t *logThrottle) total() uint64 { return t.count.Load() }
