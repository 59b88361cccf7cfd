package hostmap

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire and disk formats. Both are versioned by a leading byte.
const (
	formatEntries = 1 // count, then entries: host, backend, clock, node
	// formatDirect is formatEntries sent by the writer to every member
	// itself (a bulk change): a receiver does not relay it. Nodes of older
	// releases ignore it, with a warning, and get the change from the next
	// full-state exchange.
	formatDirect = 2
	maxNodeLen   = 255
)

// encodeEntries encodes entries for a broadcast or a full-state exchange.
func encodeEntries(dst []byte, entries []Entry) []byte {
	return encodeFormat(dst, formatEntries, entries)
}

// encodeFormat encodes entries in format formatEntries or formatDirect.
func encodeFormat(dst []byte, format byte, entries []Entry) []byte {
	dst = append(dst, format)
	dst = binary.AppendUvarint(dst, uint64(len(entries)))
	for _, e := range entries {
		dst = appendString(dst, e.Host)
		dst = appendString(dst, e.Backend)
		dst = binary.AppendUvarint(dst, e.Version.Clock)
		dst = appendString(dst, e.Version.Node)
	}
	return dst
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// decodeEntries decodes what encodeEntries wrote, validating every field:
// what another node sends is untrusted input.
func decodeEntries(buf []byte) ([]Entry, error) {
	if len(buf) == 0 || (buf[0] != formatEntries && buf[0] != formatDirect) {
		return nil, errors.New("unknown override message format")
	}
	d := decoder{buf: buf[1:]}
	n := d.uvarint()
	// Each entry takes at least 4 bytes: never allocate for more than fit.
	if d.err != nil || n > uint64(len(d.buf))/4 {
		return nil, errors.New("override message: bad entry count")
	}
	out := make([]Entry, 0, n)
	for i := uint64(0); i < n; i++ {
		e := Entry{Host: d.string(MaxHostLen), Backend: d.string(MaxHostLen + 7)}
		e.Version.Clock = d.uvarint()
		e.Version.Node = d.string(maxNodeLen)
		if d.err != nil {
			return nil, fmt.Errorf("override message: entry %d: %w", i, d.err)
		}
		if err := checkEntry(e); err != nil {
			return nil, fmt.Errorf("override message: entry %d: %w", i, err)
		}
		out = append(out, e)
	}
	if len(d.buf) != 0 {
		return nil, errors.New("override message: trailing bytes")
	}
	return out, nil
}

// checkEntry validates an entry that came from outside.
func checkEntry(e Entry) error {
	if h, err := NormalizeHost(e.Host); err != nil {
		return err
	} else if h != e.Host {
		return &FieldError{"host", "is not normalised"}
	}
	if e.Backend != "" {
		if err := ValidateBackend(e.Backend); err != nil {
			return err
		}
	}
	if e.Version.Node == "" || e.Version.Clock == 0 {
		return errors.New("version is missing")
	}
	return nil
}

type decoder struct {
	buf []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.err = errors.New("truncated or bad number")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) string(max int) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(max) || n > uint64(len(d.buf)) {
		d.err = errors.New("string too long or truncated")
		return ""
	}
	s := string(d.buf[:n])
	d.buf = d.buf[n:]
	return s
}

// Disk format of a bucket value (the key is the host).
func encodeValue(e Entry) []byte {
	b := binary.AppendUvarint(nil, e.Version.Clock)
	b = appendString(b, e.Version.Node)
	return append(b, e.Backend...)
}

func decodeValue(host string, v []byte) (Entry, error) {
	d := decoder{buf: v}
	e := Entry{Host: host}
	e.Version.Clock = d.uvarint()
	e.Version.Node = d.string(maxNodeLen)
	if d.err != nil {
		return Entry{}, d.err
	}
	e.Backend = string(d.buf)
	return e, checkEntry(e)
}
