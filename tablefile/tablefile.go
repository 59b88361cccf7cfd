// Package tablefile encodes and decodes the table file that a node writes
// for nginx's native module (nginx/module/FORMAT.md): one service's whole
// answer function (router.Export) laid out for mmap, so that nginx answers
// lookups without asking ringman.
//
// Decode is the Go reference of the module's reader: it refuses every file
// FORMAT.md says a reader must refuse, and Lookup answers a key from the
// raw layout by the format's rules, so tests can prove that a file answers
// exactly what router.Candidates does.
package tablefile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"

	"ringman/ring"
	"ringman/router"
)

// Layout constants of format 1.
const (
	Magic      = "ringtbl\x00"
	Format     = 1
	HeaderSize = 96
	// MaxInstances is the most instances a file indexes: rows hold uint16.
	MaxInstances = math.MaxUint16
	// MaxWidth is the most candidates per partition (ring.MaxCandidates).
	MaxWidth = 8
	// MaxInstanceLen bounds an instance's host:port.
	MaxInstanceLen = 1024
	// maxHostLen is the longest host that can have an override
	// (hostmap.MaxHostLen): a longer key host is never probed.
	maxHostLen = 253
)

// Header field offsets.
const (
	offMagic        = 0
	offFormat       = 8
	offHeaderSize   = 12
	offFileSize     = 16
	offEpoch        = 24
	offChecksum     = 32
	checksummed     = 40 // the checksum covers [checksummed, file_size)
	offPartitions   = 40
	offWidth        = 44
	offInstances    = 48
	offSlots        = 52
	offOverrides    = 56
	offWildDepths   = 64
	offInstancesOff = 72
	offRowsOff      = 76
	offSlotsOff     = 80
	offStringsOff   = 84
	offStringsLen   = 88

	instanceSize = 8
	slotSize     = 16
)

// ErrInvalid is wrapped by every error Decode returns for a file that
// breaks the format.
var ErrInvalid = errors.New("invalid table file")

var le = binary.LittleEndian

func align8(n uint64) uint64 { return (n + 7) &^ 7 }

// Encode lays e out as a table file. The same Export always gives the same
// bytes. It refuses what the format cannot hold: another key hash, over
// MaxInstances instances, a width over MaxWidth, an instance of 0 or over
// MaxInstanceLen bytes, an override host or backend over 65535 bytes.
func Encode(e *router.Export) ([]byte, error) {
	if e == nil {
		return nil, errors.New("encode table: no export")
	}
	P, W, N := e.Partitions, e.Width, len(e.Instances)
	switch {
	case e.Hash != ring.HashName:
		return nil, fmt.Errorf("encode table: key hash %q, the format knows only xxhash64", e.Hash)
	case N > MaxInstances:
		return nil, fmt.Errorf("encode table: %d instances, a table file indexes at most %d", N, MaxInstances)
	case P < 0 || P > math.MaxUint32 || W < 0 || W > MaxWidth:
		return nil, fmt.Errorf("encode table: %d partitions of width %d, want width 1 to %d", P, W, MaxWidth)
	case (P == 0) != (W == 0) || (P == 0) != (N == 0):
		return nil, fmt.Errorf("encode table: %d partitions, width %d, %d instances: all or none must be 0", P, W, N)
	case len(e.Table) != P*W:
		return nil, fmt.Errorf("encode table: %d table entries for %d partitions of width %d", len(e.Table), P, W)
	case len(e.OverrideHosts) != len(e.OverrideBackends):
		return nil, fmt.Errorf("encode table: %d override hosts, %d backends", len(e.OverrideHosts), len(e.OverrideBackends))
	}
	for _, inst := range e.Instances {
		if len(inst) == 0 || len(inst) > MaxInstanceLen {
			return nil, fmt.Errorf("encode table: instance of %d bytes, want 1 to %d", len(inst), MaxInstanceLen)
		}
	}
	for _, v := range e.Table {
		if int(v) >= N {
			return nil, fmt.Errorf("encode table: entry %d, only %d instances", v, N)
		}
	}
	nover := len(e.OverrideHosts)
	var slots uint64
	if nover > 0 {
		slots = 1 << bits.Len64(uint64(2*nover-1)) // the least power of two >= 2×
	}
	if slots > math.MaxUint32 {
		return nil, fmt.Errorf("encode table: %d overrides are too many", nover)
	}

	stringsLen := uint64(0)
	for _, inst := range e.Instances {
		stringsLen += uint64(len(inst))
	}
	for i, h := range e.OverrideHosts {
		b := e.OverrideBackends[i]
		if len(h) == 0 || len(h) > math.MaxUint16 || len(b) == 0 || len(b) > math.MaxUint16 {
			return nil, fmt.Errorf("encode table: override %.64q -> %.64q: host and backend must be 1 to 65535 bytes", h, b)
		}
		stringsLen += uint64(len(h) + len(b))
	}
	instancesOff := uint64(HeaderSize)
	rowsOff := align8(instancesOff + instanceSize*uint64(N))
	slotsOff := align8(rowsOff + 2*uint64(P)*uint64(W))
	stringsOff := slotsOff + slotSize*slots
	size := stringsOff + stringsLen
	if stringsOff > math.MaxUint32 || stringsLen > math.MaxUint32 {
		return nil, fmt.Errorf("encode table: %d bytes, offsets are 32-bit", size)
	}

	buf := make([]byte, size)
	copy(buf[offMagic:], Magic)
	le.PutUint32(buf[offFormat:], Format)
	le.PutUint32(buf[offHeaderSize:], HeaderSize)
	le.PutUint64(buf[offFileSize:], size)
	le.PutUint64(buf[offEpoch:], e.Epoch)
	le.PutUint32(buf[offPartitions:], uint32(P))
	le.PutUint32(buf[offWidth:], uint32(W))
	le.PutUint32(buf[offInstances:], uint32(N))
	le.PutUint32(buf[offSlots:], uint32(slots))
	le.PutUint32(buf[offOverrides:], uint32(nover))
	le.PutUint32(buf[offInstancesOff:], uint32(instancesOff))
	le.PutUint32(buf[offRowsOff:], uint32(rowsOff))
	le.PutUint32(buf[offSlotsOff:], uint32(slotsOff))
	le.PutUint32(buf[offStringsOff:], uint32(stringsOff))
	le.PutUint32(buf[offStringsLen:], uint32(stringsLen))

	str := uint64(0) // next free byte of the strings
	for i, inst := range e.Instances {
		ref := buf[instancesOff+instanceSize*uint64(i):]
		le.PutUint32(ref, uint32(str))
		le.PutUint32(ref[4:], uint32(len(inst)))
		str += uint64(copy(buf[stringsOff+str:], inst))
	}
	rows := buf[rowsOff:]
	for i, v := range e.Table {
		le.PutUint16(rows[2*i:], uint16(v))
	}
	var wild uint64
	for i, h := range e.OverrideHosts {
		b := e.OverrideBackends[i]
		hash := xxhash.Sum64String(h)
		s := hash & (slots - 1)
		for le.Uint16(buf[slotsOff+slotSize*s+12:]) != 0 {
			if string(hostAt(buf, slotsOff+slotSize*s, stringsOff)) == h {
				return nil, fmt.Errorf("encode table: override host %.64q twice", h)
			}
			s = (s + 1) & (slots - 1)
		}
		slot := buf[slotsOff+slotSize*s:]
		le.PutUint64(slot, hash)
		le.PutUint32(slot[8:], uint32(str))
		le.PutUint16(slot[12:], uint16(len(h)))
		le.PutUint16(slot[14:], uint16(len(b)))
		str += uint64(copy(buf[stringsOff+str:], h))
		str += uint64(copy(buf[stringsOff+str:], b))
		if rest, ok := strings.CutPrefix(h, "*."); ok {
			wild |= 1 << min(countDots(rest)+1, 63)
		}
	}
	le.PutUint64(buf[offWildDepths:], wild)
	le.PutUint64(buf[offChecksum:], xxhash.Sum64(buf[checksummed:]))
	return buf, nil
}

// hostAt returns the host of the slot at off, for a file being encoded.
func hostAt(buf []byte, off, stringsOff uint64) []byte {
	s := stringsOff + uint64(le.Uint32(buf[off+8:]))
	return buf[s : s+uint64(le.Uint16(buf[off+12:]))]
}

func countDots[T ~string | ~[]byte](s T) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			n++
		}
	}
	return n
}

// Table is a decoded table file: every check of FORMAT.md passed, so
// lookups need no bounds beyond the ones Go makes anyway.
type Table struct {
	buf        []byte
	Epoch      uint64
	Partitions int
	Width      int
	N          int // instances
	Slots      int
	Overrides  int
	WildDepths uint64

	instancesOff, rowsOff, slotsOff, stringsOff, stringsLen uint64
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Decode checks buf, a whole table file, as FORMAT.md's reader does, and
// returns the table, which keeps buf: do not modify buf afterwards. Every
// error wraps ErrInvalid and says which check failed.
func Decode(buf []byte) (*Table, error) {
	if len(buf) < HeaderSize {
		return nil, invalid("%d bytes, shorter than the %d-byte header", len(buf), HeaderSize)
	}
	if string(buf[offMagic:offMagic+8]) != Magic {
		return nil, invalid("bad magic %q", buf[offMagic:offMagic+8])
	}
	if f := le.Uint32(buf[offFormat:]); f != Format {
		return nil, invalid("format %d, want %d", f, Format)
	}
	if h := le.Uint32(buf[offHeaderSize:]); h != HeaderSize {
		return nil, invalid("header size %d, want %d", h, HeaderSize)
	}
	if s := le.Uint64(buf[offFileSize:]); s != uint64(len(buf)) {
		return nil, invalid("file size field %d, the file has %d bytes", s, len(buf))
	}
	if sum, want := xxhash.Sum64(buf[checksummed:]), le.Uint64(buf[offChecksum:]); sum != want {
		return nil, invalid("checksum %016x, the header says %016x", sum, want)
	}
	t := &Table{
		buf:          buf,
		Epoch:        le.Uint64(buf[offEpoch:]),
		WildDepths:   le.Uint64(buf[offWildDepths:]),
		instancesOff: uint64(le.Uint32(buf[offInstancesOff:])),
		rowsOff:      uint64(le.Uint32(buf[offRowsOff:])),
		slotsOff:     uint64(le.Uint32(buf[offSlotsOff:])),
		stringsOff:   uint64(le.Uint32(buf[offStringsOff:])),
		stringsLen:   uint64(le.Uint32(buf[offStringsLen:])),
	}
	// 32-bit fields in 64-bit ints: no product below overflows.
	P, W, N := uint64(le.Uint32(buf[offPartitions:])), uint64(le.Uint32(buf[offWidth:])), uint64(le.Uint32(buf[offInstances:]))
	S, used := uint64(le.Uint32(buf[offSlots:])), uint64(le.Uint32(buf[offOverrides:]))
	switch {
	case P == 0 && (W != 0 || N != 0):
		return nil, invalid("0 partitions but width %d and %d instances, want 0 and 0", W, N)
	case P > 0 && (W < 1 || W > MaxWidth):
		return nil, invalid("width %d, want 1 to %d", W, MaxWidth)
	case P > 0 && (N < 1 || N > MaxInstances):
		return nil, invalid("%d instances with %d partitions, want 1 to %d", N, P, MaxInstances)
	case S&(S-1) != 0:
		return nil, invalid("%d override slots, not a power of two", S)
	case S < 2*used:
		return nil, invalid("%d override slots for %d overrides, want at least twice as many", S, used)
	}
	t.Partitions, t.Width, t.N, t.Slots, t.Overrides = int(P), int(W), int(N), int(S), int(used)
	size := uint64(len(buf))
	for _, sec := range []struct {
		name     string
		off, len uint64
	}{
		{"instances", t.instancesOff, instanceSize * N},
		{"rows", t.rowsOff, 2 * P * W},
		{"slots", t.slotsOff, slotSize * S},
		{"strings", t.stringsOff, t.stringsLen},
	} {
		if sec.off%8 != 0 {
			return nil, invalid("%s at offset %d, not a multiple of 8", sec.name, sec.off)
		}
		if sec.off > size || sec.len > size-sec.off {
			return nil, invalid("%s at offset %d, %d bytes long, past the end of the %d-byte file", sec.name, sec.off, sec.len, size)
		}
	}
	for i := uint64(0); i < N; i++ {
		ref := buf[t.instancesOff+instanceSize*i:]
		off, l := uint64(le.Uint32(ref)), uint64(le.Uint32(ref[4:]))
		if l < 1 || l > MaxInstanceLen {
			return nil, invalid("instance %d is %d bytes long, want 1 to %d", i, l, MaxInstanceLen)
		}
		if off+l > t.stringsLen {
			return nil, invalid("instance %d at string offset %d, %d bytes long, past the %d string bytes", i, off, l, t.stringsLen)
		}
	}
	rows := buf[t.rowsOff : t.rowsOff+2*P*W]
	for i := 0; i < len(rows); i += 2 {
		if v := uint64(le.Uint16(rows[i:])); v >= N {
			return nil, invalid("row %d, candidate %d: instance %d of %d", uint64(i/2)/W, uint64(i/2)%W, v, N)
		}
	}
	var count uint64
	for s := uint64(0); s < S; s++ {
		slot := buf[t.slotsOff+slotSize*s:]
		hl, bl := uint64(le.Uint16(slot[12:])), uint64(le.Uint16(slot[14:]))
		if hl == 0 {
			continue
		}
		count++
		if bl == 0 {
			return nil, invalid("slot %d has an empty backend", s)
		}
		off := uint64(le.Uint32(slot[8:]))
		if off+hl+bl > t.stringsLen {
			return nil, invalid("slot %d at string offset %d, %d+%d bytes long, past the %d string bytes", s, off, hl, bl, t.stringsLen)
		}
		host := buf[t.stringsOff+off : t.stringsOff+off+hl]
		if h := xxhash.Sum64(host); h != le.Uint64(slot) {
			return nil, invalid("slot %d: hash %016x, its host %.64q hashes to %016x", s, le.Uint64(slot), host, h)
		}
	}
	if count != used {
		return nil, invalid("%d used slots, the header says %d overrides", count, used)
	}
	return t, nil
}

// Instance returns instance i (0 <= i < N).
func (t *Table) Instance(i int) string {
	ref := t.buf[t.instancesOff+instanceSize*uint64(i):]
	off := t.stringsOff + uint64(le.Uint32(ref))
	return string(t.buf[off : off+uint64(le.Uint32(ref[4:]))])
}

// Lookup answers key by FORMAT.md's "Answering a key": the override of the
// key's host alone, else up to n candidates of the key's row, owner first;
// router.Candidates(service, key, n) answers the same for the service and
// state the file was written from.
func (t *Table) Lookup(key []byte, n int) ([]string, router.Source) {
	if n <= 0 {
		return nil, router.Miss
	}
	if b, ok := t.override(key); ok {
		return []string{b}, router.Override
	}
	if t.Partitions == 0 {
		return nil, router.Miss
	}
	r := xxhash.Sum64(key) % uint64(t.Partitions)
	row := t.buf[t.rowsOff+2*uint64(t.Width)*r:]
	out := make([]string, min(n, t.Width))
	for i := range out {
		out[i] = t.Instance(int(le.Uint16(row[2*i:])))
	}
	return out, router.Ring
}

// override is steps 1 and 2 of "Answering a key".
func (t *Table) override(key []byte) (string, bool) {
	if t.Slots == 0 || len(key) == 0 || key[0] == '/' {
		return "", false
	}
	host := key
	if i := bytes.IndexByte(host, '/'); i >= 0 {
		host = host[:i]
	}
	if i := bytes.IndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	if n := len(host); n > 0 && host[n-1] == '.' {
		host = host[:n-1]
	}
	if len(host) == 0 || len(host) > maxHostLen {
		return "", false
	}
	// buf[1:] is the lower-cased host; buf[i:] with buf[i] = '*' is the
	// wildcard of the suffix from the host's dot at i.
	buf := make([]byte, 1+len(host))
	for i, c := range host {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[1+i] = c
	}
	lower := buf[1:]
	if b, ok := t.probe(lower); ok {
		return b, true
	}
	for i := 1; i < len(lower); i++ {
		if lower[i] != '.' {
			continue
		}
		labels := countDots(lower[i+1:]) + 1
		if t.WildDepths&(1<<min(labels, 63)) == 0 {
			continue
		}
		buf[i] = '*'
		if b, ok := t.probe(buf[i:]); ok {
			return b, true
		}
	}
	return "", false
}

// probe finds host's slot: Decode checked that an empty slot ends every
// probe sequence.
func (t *Table) probe(host []byte) (string, bool) {
	h := xxhash.Sum64(host)
	mask := uint64(t.Slots - 1)
	for s := h & mask; ; s = (s + 1) & mask {
		slot := t.buf[t.slotsOff+slotSize*s:]
		hl := uint64(le.Uint16(slot[12:]))
		if hl == 0 {
			return "", false
		}
		if le.Uint64(slot) != h || hl != uint64(len(host)) {
			continue
		}
		off := t.stringsOff + uint64(le.Uint32(slot[8:]))
		if bytes.Equal(t.buf[off:off+hl], host) {
			return string(t.buf[off+hl : off+hl+uint64(le.Uint16(slot[14:]))]), true
		}
	}
}

// Export rebuilds the Export the file was encoded from (Hash "xxhash64";
// overrides sorted by host), for tests and tools.
func (t *Table) Export() *router.Export {
	e := &router.Export{Epoch: t.Epoch, Hash: ring.HashName, Partitions: t.Partitions, Width: t.Width}
	for i := range t.N {
		e.Instances = append(e.Instances, t.Instance(i))
	}
	rows := t.buf[t.rowsOff : t.rowsOff+2*uint64(t.Partitions*t.Width)]
	if len(rows) > 0 {
		e.Table = make([]uint32, len(rows)/2)
	}
	for i := range e.Table {
		e.Table[i] = uint32(le.Uint16(rows[2*i:]))
	}
	type pair struct{ h, b string }
	var pairs []pair
	for s := range t.Slots {
		slot := t.buf[t.slotsOff+slotSize*uint64(s):]
		hl, bl := uint64(le.Uint16(slot[12:])), uint64(le.Uint16(slot[14:]))
		if hl == 0 {
			continue
		}
		off := t.stringsOff + uint64(le.Uint32(slot[8:]))
		pairs = append(pairs, pair{string(t.buf[off : off+hl]), string(t.buf[off+hl : off+hl+bl])})
	}
	slices.SortFunc(pairs, func(a, b pair) int { return strings.Compare(a.h, b.h) })
	for _, p := range pairs {
		e.OverrideHosts = append(e.OverrideHosts, p.h)
		e.OverrideBackends = append(e.OverrideBackends, p.b)
	}
	return e
}
