package tablefile_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"

	"ringman/router"
	"ringman/tablefile"
)

var le = binary.LittleEndian

// Header field offsets (FORMAT.md), spelt out again here so that a change of
// the layout in the package fails these tests.
const (
	hFormat, hHeaderSize, hFileSize, hChecksum          = 8, 12, 16, 32
	hPartitions, hWidth, hInstances, hSlots, hOverrides = 40, 44, 48, 52, 56
	hInstancesOff, hRowsOff, hSlotsOff, hStringsOff     = 72, 76, 80, 84
	hStringsLen                                         = 88
)

// reseal recomputes the checksum, so that a mutation reaches the check
// made after it.
func reseal(b []byte) []byte {
	le.PutUint64(b[hChecksum:], xxhash.Sum64(b[40:]))
	return b
}

func u32(b []byte, off int) int { return int(le.Uint32(b[off:])) }

// firstUsedSlot returns the file offset of the first used override slot.
func firstUsedSlot(b []byte) int {
	for s := range u32(b, hSlots) {
		off := u32(b, hSlotsOff) + 16*s
		if le.Uint16(b[off+12:]) != 0 {
			return off
		}
	}
	panic("no used slot")
}

// TestDecodeRefuses corrupts a valid file in every way FORMAT.md's reader
// must refuse, and checks that Decode refuses each with the error of that
// check: a mutation that another check happened to catch would hide a
// missing one. The checksum is recomputed after every mutation but the
// checksum's own.
func TestDecodeRefuses(t *testing.T) {
	f := newFixture(t)
	f.update(t, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
	f.set(t, testOverrides[:12]...) // 6 overrides in 16 slots: one more or less still fits
	_, good := f.encode(t)
	if _, err := tablefile.Decode(good); err != nil {
		t.Fatal(err)
	}
	nover := u32(good, hOverrides)
	if nover != 6 || u32(good, hSlots) != 16 {
		t.Fatalf("fixture: %d overrides in %d slots, want 6 in 16", nover, u32(good, hSlots))
	}
	put32 := func(off int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { le.PutUint32(b[off:], v); return reseal(b) }
	}
	add32 := func(off int, d int) func([]byte) []byte {
		return func(b []byte) []byte { le.PutUint32(b[off:], uint32(u32(b, off)+d)); return reseal(b) }
	}
	instance := func(i, field int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { le.PutUint32(b[u32(b, hInstancesOff)+8*i+field:], v); return reseal(b) }
	}
	slot := func(field int, v uint64) func([]byte) []byte {
		return func(b []byte) []byte {
			off := firstUsedSlot(b) + field
			switch field {
			case 0:
				le.PutUint64(b[off:], v)
			case 8:
				le.PutUint32(b[off:], uint32(v))
			default:
				le.PutUint16(b[off:], uint16(v))
			}
			return reseal(b)
		}
	}
	for _, tc := range []struct {
		name   string
		mutate func([]byte) []byte
		want   string
	}{
		{"empty", func(b []byte) []byte { return nil }, "shorter than the 96-byte header"},
		{"truncated header", func(b []byte) []byte { return b[:95] }, "shorter than the 96-byte header"},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }, "file size field"},
		{"a byte more", func(b []byte) []byte { return append(b, 0) }, "file size field"},
		{"bad magic", func(b []byte) []byte { b[3] = 'X'; return b }, "bad magic"},
		{"magic without NUL", func(b []byte) []byte { b[7] = '1'; return b }, "bad magic"},
		{"format 2", put32(hFormat, 2), "format 2"},
		{"header size 64", put32(hHeaderSize, 64), "header size 64"},
		{"file size field", func(b []byte) []byte { le.PutUint64(b[hFileSize:], uint64(len(b))+8); return b }, "file size field"},
		{"bad checksum", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, "checksum"},
		{"checksum field", func(b []byte) []byte { b[hChecksum] ^= 1; return b }, "checksum"},
		{"checksum of a reserved byte", func(b []byte) []byte { b[60] = 1; return b }, "checksum"},
		{"0 partitions, width kept", put32(hPartitions, 0), "0 partitions but width"},
		{"width 0", put32(hWidth, 0), "width 0"},
		{"width 9", put32(hWidth, 9), "width 9"},
		{"0 instances", put32(hInstances, 0), "0 instances"},
		{"65536 instances", put32(hInstances, 65536), "65536 instances"},
		{"slots not a power of two", put32(hSlots, 15), "not a power of two"},
		{"slots fewer than twice the overrides", put32(hSlots, 8), "at least twice"},
		{"overrides past half the slots", put32(hOverrides, 9), "at least twice"},
		{"one override more than used", add32(hOverrides, 1), "used slots"},
		{"one override fewer than used", add32(hOverrides, -1), "used slots"},
		{"instances misaligned", add32(hInstancesOff, 4), "instances at offset 100, not a multiple of 8"},
		{"rows misaligned", add32(hRowsOff, 2), "not a multiple of 8"},
		{"slots misaligned", add32(hSlotsOff, 1), "not a multiple of 8"},
		{"strings misaligned", add32(hStringsOff, 4), "not a multiple of 8"},
		{"strings past the end", add32(hStringsLen, 1), "strings at offset"},
		{"strings offset past the end", put32(hStringsOff, 0xFFFFFFF8), "past the end"},
		{"strings length 4 GiB", put32(hStringsLen, math.MaxUint32), "past the end"},
		{"rows past the end", func(b []byte) []byte { le.PutUint32(b[hRowsOff:], uint32(len(b)&^7)); return reseal(b) }, "rows at offset"},
		{"slots past the end", func(b []byte) []byte { le.PutUint32(b[hSlotsOff:], uint32(len(b)&^7)); return reseal(b) }, "slots at offset"},
		{"2^32-1 partitions (overflow-sized rows)", put32(hPartitions, math.MaxUint32), "rows at offset"},
		{"2^31 slots (overflow-sized slots)", put32(hSlots, 1<<31), "slots at offset"},
		{"65535 instances (overflow-sized instances)", put32(hInstances, 65535), "instances at offset"},
		{"row index = N", func(b []byte) []byte { le.PutUint16(b[u32(b, hRowsOff):], 3); return reseal(b) }, "instance 3 of 3"},
		{"row index 0xFFFF", func(b []byte) []byte {
			le.PutUint16(b[u32(b, hRowsOff)+2*(u32(b, hPartitions)*3-1):], 0xFFFF)
			return reseal(b)
		}, "instance 65535 of 3"},
		{"instance of 0 bytes", instance(1, 4, 0), "0 bytes long"},
		{"instance of 1025 bytes", instance(1, 4, 1025), "1025 bytes long"},
		{"instance past the strings", instance(2, 0, uint32(u32(good, hStringsLen))), "past the"},
		{"instance offset wraps 32 bits", instance(0, 0, math.MaxUint32), "past the"},
		{"slot host past the strings", slot(8, uint64(u32(good, hStringsLen))), "past the"},
		{"slot offset wraps 32 bits", slot(8, math.MaxUint32), "past the"},
		{"slot backend past the strings", slot(14, 0xFFFF), "past the"},
		{"slot host past the strings (length)", slot(12, 0xFFFF), "past the"},
		{"slot with an empty backend", slot(14, 0), "empty backend"},
		{"slot hash", slot(0, 12345), "hashes to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mutate(slices.Clone(good))
			tb, err := tablefile.Decode(b)
			if err == nil {
				// Show that the file is unsafe, not just odd.
				t.Fatalf("Decode accepted it (%d partitions, %d slots); want an error with %q", tb.Partitions, tb.Slots, tc.want)
			}
			if !errors.Is(err, tablefile.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decode: %v; want ErrInvalid with %q", err, tc.want)
			}
		})
	}
}

// TestEncodeRefuses covers what the format cannot hold.
func TestEncodeRefuses(t *testing.T) {
	f := newFixture(t)
	f.update(t, "10.0.0.1:80", "10.0.0.2:80")
	good, _ := f.encode(t)
	for _, tc := range []struct {
		name   string
		mutate func(e *router.Export)
		want   string
	}{
		{"other hash", func(e *router.Export) { e.Hash = "fnv" }, "key hash"},
		{"too many instances", func(e *router.Export) { e.Instances = make([]string, 65536) }, "65536 instances"},
		{"width 9", func(e *router.Export) { e.Width = 9 }, "width 9"},
		{"entry out of range", func(e *router.Export) { e.Table = slices.Clone(e.Table); e.Table[0] = 2 }, "entry 2"},
		{"short table", func(e *router.Export) { e.Table = e.Table[1:] }, "table entries"},
		{"empty instance", func(e *router.Export) { e.Instances = []string{"", "x:1"} }, "instance of 0 bytes"},
		{"long instance", func(e *router.Export) { e.Instances = []string{strings.Repeat("a", 1025), "x:1"} }, "instance of 1025 bytes"},
		{"unpaired overrides", func(e *router.Export) { e.OverrideHosts = []string{"a.b"} }, "1 override hosts, 0 backends"},
		{"empty backend", func(e *router.Export) { e.OverrideHosts, e.OverrideBackends = []string{"a.b"}, []string{""} }, "1 to 65535 bytes"},
		{"same host twice", func(e *router.Export) {
			e.OverrideHosts, e.OverrideBackends = []string{"a.b", "a.b"}, []string{"x:1", "y:2"}
		}, "twice"},
		{"partitions without instances", func(e *router.Export) { e.Instances = nil }, "all or none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := *good
			tc.mutate(&e)
			if _, err := tablefile.Encode(&e); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Encode: %v; want an error with %q", err, tc.want)
			}
		})
	}
	if _, err := tablefile.Encode(nil); err == nil {
		t.Fatal("Encode(nil) succeeded")
	}
}

// TestMostInstances encodes the most instances a file holds: the last one,
// 65534, is a row entry that still fits in 16 bits.
func TestMostInstances(t *testing.T) {
	e := &router.Export{Hash: "xxhash64", Partitions: 2, Width: 8, Table: make([]uint32, 16)}
	for i := range tablefile.MaxInstances {
		e.Instances = append(e.Instances, fmt.Sprintf("h%05d:1", i))
	}
	for i := range e.Table {
		e.Table[i] = uint32(tablefile.MaxInstances - 1 - i)
	}
	buf, err := tablefile.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := tablefile.Decode(buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"a", "b", "c", "d"} {
		got, _ := tb.Lookup([]byte(key), 1)
		if got[0] != "h65534:1" && got[0] != "h65526:1" {
			t.Fatalf("key %s: owner %q, want h65534:1 or h65526:1", key, got)
		}
	}
}
