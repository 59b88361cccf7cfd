package discovery

import "time"

// Membership changes come in bursts: a cluster forming, a rack failing, or
// a loaded cluster flapping, where each change costs every node a rebuild of
// its rings (OnChange). Unbounded, those rebuilds take the CPU that gossip
// needs to answer probes in time, which makes more members look failed: the
// storm feeds itself. So the event loop publishes a lone change at once and
// folds a burst into few publishes:
//
//   - a change after at least coalesceQuiet without one is published at once
//     (a single failover is never delayed);
//   - a change sooner than that waits until the changes have paused for
//     coalesceQuiet, or until coalesceMax after the first change it holds,
//     whichever comes first, and every change in between rides along.
//
// A burst of any number of changes thus costs at most one publish for its
// first change plus one per coalesceMax it lasts. Lookups never wait on it:
// they read the rings published last.
const (
	coalesceQuiet = 100 * time.Millisecond
	coalesceMax   = time.Second
)

// coalescer decides when the event loop publishes. Only the event loop
// uses it.
type coalescer struct {
	quiet, max time.Duration

	last  time.Time   // the last publish
	first time.Time   // the first change held back, zero when none is
	timer *time.Timer // fires when the held changes are due
}

// changed records a change at now. It reports whether to publish now;
// otherwise due() fires when to.
func (c *coalescer) changed(now time.Time) bool {
	if c.first.IsZero() && now.Sub(c.last) >= c.quiet {
		return true
	}
	if c.first.IsZero() {
		c.first = now
	}
	at := min(c.quiet, c.first.Add(c.max).Sub(now))
	if c.timer == nil {
		c.timer = time.NewTimer(at)
	} else {
		c.timer.Reset(at)
	}
	return false
}

// due fires when held changes are to be published; nil (never) when there
// are none.
func (c *coalescer) due() <-chan time.Time {
	if c.first.IsZero() {
		return nil
	}
	return c.timer.C
}

// published records a publish at now.
func (c *coalescer) published(now time.Time) {
	c.last, c.first = now, time.Time{}
	if c.timer != nil {
		c.timer.Stop()
	}
}

// stop releases the timer.
func (c *coalescer) stop() {
	if c.timer != nil {
		c.timer.Stop()
	}
}
