package hostmap

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"time"
)

// Merge applies entries learnt from other nodes (the greater version wins)
// and returns how many changed the table. They are durable when it returns.
func (t *Table) Merge(entries []Entry) (int, error) {
	newer, err := t.merge(entries)
	return len(newer), err
}

// merge is Merge returning the entries that changed the table.
func (t *Table) merge(entries []Entry) ([]Entry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var newer, refused []Entry
	limit := t.clockLimit()
	for _, e := range entries {
		if e.Version.Clock > limit {
			refused = append(refused, e)
			continue
		}
		t.clock = max(t.clock, e.Version.Clock) // causality: later local writes win
		cur, ok := t.entries[e.Host]
		if ok && !wins(e, cur) {
			continue
		}
		// A tombstone for a host we hold nothing of deletes nothing, and
		// one we would collect at once need not be stored. A tombstone
		// newer than what we hold always applies, however old our clock
		// says it is: a node whose clock is ahead by more than the TTL
		// would otherwise keep the deleted entry forever.
		if !ok && e.Backend == "" && t.expired(e) {
			continue
		}
		newer = append(newer, e)
	}
	if len(refused) > 0 {
		t.refusedLocked(refused)
	}
	if len(newer) == 0 {
		return nil, nil
	}
	// The same host twice in one batch: keep the winner only.
	slices.SortFunc(newer, func(a, b Entry) int {
		if c := strings.Compare(a.Host, b.Host); c != 0 {
			return c
		}
		if wins(a, b) {
			return -1
		}
		return 1
	})
	newer = slices.CompactFunc(newer, func(a, b Entry) bool { return a.Host == b.Host })
	if err := t.commitLocked(newer); err != nil {
		return nil, err
	}
	return newer, nil
}

// wins reports whether a replaces b: the greater version, and for equal
// versions (which one node never issues twice) the greater backend, so that
// every node decides alike.
func wins(a, b Entry) bool {
	if c := cmp.Compare(a.Version.Clock, b.Version.Clock); c != 0 {
		return c > 0
	}
	if c := strings.Compare(a.Version.Node, b.Version.Node); c != 0 {
		return c > 0
	}
	return a.Backend > b.Backend
}

// nextVersionLocked issues the next hybrid-logical-clock version: the wall
// clock, but never at or below anything this node issued or saw.
func (t *Table) nextVersionLocked() Version {
	// Saturating: the clock cannot reach the top (clockLimit), but if it
	// did, a repeated version beats one that wraps to 0.
	t.clock = max(physical(t.opts.now()), min(t.clock, math.MaxUint64-1)+1)
	return Version{Clock: t.clock, Node: t.opts.Node}
}

// clockLimit is the greatest version accepted from another node: this
// node's clock plus MaxClockOffset. Anything beyond would become the clock
// of every later write here (HLC), and a version near 2^64 would leave no
// room for a later one.
func (t *Table) clockLimit() uint64 {
	return physical(t.opts.now().Add(t.opts.MaxClockOffset))
}

// refusedLocked counts and reports entries refused for their version, with
// at most one log line a minute.
func (t *Table) refusedLocked(refused []Entry) {
	t.refused.Add(uint64(len(refused)))
	now := time.Now().UnixNano()
	if last := t.refusedLogged.Load(); last != 0 && now-last < int64(time.Minute) {
		return
	}
	t.refusedLogged.Store(now)
	e := refused[0]
	t.log.Warn("refused overrides from another node: their versions are too far ahead of this node's clock (accepted again once it catches up, by a later full-state exchange)",
		"node", e.Version.Node, "host", e.Host, "version_time", e.Version.Time(),
		"ahead", e.Version.Time().Sub(t.opts.now()).Round(time.Millisecond),
		"max_clock_offset", t.opts.MaxClockOffset, "refused", len(refused))
}

// RefusedVersions counts the entries from other nodes that were not merged
// because their version was more than Options.MaxClockOffset ahead of this
// node's clock.
func (t *Table) RefusedVersions() uint64 { return t.refused.Load() }

// maxMillis is the largest millisecond a Clock holds (48 bits, year 10889).
const maxMillis = 1<<48 - 1

// physical is the Clock reading of wall-clock time w: Unix milliseconds in
// the high 48 bits, the fraction of the millisecond in 1/65,536ths (~15 ns)
// in the low 16. The fraction orders two writes of one millisecond made
// through different nodes by when they were made, where a counter starting
// at 0 each millisecond would make them equal and leave the order to the
// node names. Versions written with a counter compare alike: the layout is
// the same.
func physical(w time.Time) uint64 {
	ms := w.UnixMilli()
	if ms <= 0 {
		return 0
	}
	if ms > maxMillis {
		return maxMillis<<16 | 0xffff
	}
	frac := uint64(w.Nanosecond()%1e6) << 16 / 1e6
	return uint64(ms)<<16 | frac
}

// lastJSONMillis is 9999-12-31T23:59:59.999Z, the last millisecond that
// encoding/json can write.
const lastJSONMillis = 253402300799999

// Time is when the version was written, by the writer's clock, to the
// millisecond. A version past year 9999, which only a broken or hostile
// node writes, reads as the last millisecond of 9999, so that it can still
// be shown.
func (v Version) Time() time.Time {
	return time.UnixMilli(min(int64(v.Clock>>16), lastJSONMillis)).UTC()
}

func (t *Table) expired(e Entry) bool {
	return t.opts.now().Sub(e.Version.Time()) > t.opts.TombstoneTTL
}
