// Package hostmap holds ringman's overrides: explicit host -> backend entries
// that win over the ring (README: How it decides), kept in the node's bbolt file and shared
// with every node of the cluster.
//
// Each entry carries a Version (a hybrid logical clock reading plus the
// writing node's name as tie-break); merging keeps the greater version, and a
// delete is a tombstone with its own version. Merge is commutative,
// associative and idempotent, so every node ends with the same table whatever
// order changes arrive in. Tombstones are dropped after Options.TombstoneTTL;
// a node that was away longer than that may bring a deleted entry back.
//
// Lookups (Match) read an immutable index published with one atomic swap:
// no lock, no allocation. The index is split into shards by host hash, so a
// write copies only the shards of the hosts it changes and costs the same
// in a table of 1,000 as of 100,000. Writes are committed to bbolt
// (fsynced, only the changed keys) before they are published or
// acknowledged.
package hostmap

import (
	"errors"
	"log/slog"
	"time"
)

// DefaultTombstoneTTL is how long a delete is remembered. It must be longer
// than any partition or outage after which a node should still learn of the
// delete.
const DefaultTombstoneTTL = 7 * 24 * time.Hour

// DefaultMaxClockOffset bounds how far ahead of this node's clock a version
// from another node may be. NTP keeps clocks far closer than a minute; a
// version further ahead is from a broken clock or a hostile member, and
// adopting it would let it win over every later write. A refused entry from
// a peer that is merely skewed comes again with a later full-state exchange
// and is accepted once this node's clock is within the bound.
const DefaultMaxClockOffset = time.Minute

// MaxHostLen is the longest host name (DNS: 253 bytes).
const MaxHostLen = 253

// ErrNotFound is returned for a host without a (live) entry.
var ErrNotFound = errors.New("no override for that host")

// FieldError is a validation failure; Field is "host" or "backend".
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Version orders the writes of one host across the cluster.
type Version struct {
	Clock uint64 // hybrid logical clock: Unix milliseconds << 16 | 1/65,536ths of the millisecond (see physical)
	Node  string // the writer; breaks ties between equal clocks
}

// Entry is one override, or a tombstone when Backend is "".
type Entry struct {
	Host    string
	Backend string
	Version Version
}

// Pair is a host and backend to set.
type Pair struct {
	Host    string `json:"host"`
	Backend string `json:"backend"`
}

// Options configure a Table.
type Options struct {
	// Node is this node's name, written into the versions it creates.
	Node string
	// TombstoneTTL is how long deletes are remembered (default DefaultTombstoneTTL).
	TombstoneTTL time.Duration
	// MaxClockOffset is how far ahead of this node's clock a version from
	// another node may be (default DefaultMaxClockOffset). An entry with a
	// version further ahead is not merged (Table.RefusedVersions counts
	// it) and does not move this node's clock.
	MaxClockOffset time.Duration
	// Broadcast, when set, sends a change to the other nodes. key names what
	// the message is about: a newer message with the same key replaces an
	// older one still queued. It must not block.
	Broadcast func(key string, msg []byte)
	// Logger may be nil.
	Logger *slog.Logger
	// OnCommit, when set, receives the duration of each write transaction
	// on the data file (a set, a delete, a merge, a tombstone collection),
	// fsync included. It is called after the commit and must not block.
	OnCommit func(took time.Duration)
	// OnReplicated, when set, receives for each change from another node
	// that this node applied (a broadcast or a full-state exchange) the
	// time from the write on its origin node, by that node's clock (the
	// wall-clock part of its Version), to its commit here. Clock skew
	// between the nodes shows in it, and can make it negative. It is
	// called from the merge goroutine and must not block.
	OnReplicated func(delay time.Duration)
	// now is the clock; tests replace it.
	now func() time.Time
}
