package discovery

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
)

// meta is what a node advertises in memberlist's node metadata.
//
// Wire format (version 1), compact because memberlist caps it at
// memberlist.MetaMaxSize (512) bytes:
//
//	'R' 1                       magic and format version
//	flags                       byte: 1 draining, 2 leaving
//	str fingerprint, str version
//	uvarint services, then per service: str name, uvarint n, n × str instance
//
// where str is a uvarint length followed by that many bytes. Bytes after the
// last service are ignored, so that later releases can append fields without
// changing the format version.
type meta struct {
	Draining    bool
	Leaving     bool
	Fingerprint string
	Version     string
	Services    map[string][]string // sorted, deduplicated instances
}

const (
	metaMagic   = 'R'
	metaFormat1 = 1

	flagDraining = 1 << 0
	flagLeaving  = 1 << 1
)

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// encode returns the wire form of m. Services are written in sorted order so
// that the same meta always encodes to the same bytes (memberlist compares
// meta bytes to decide whether to report an update).
func (m meta) encode() []byte {
	b := []byte{metaMagic, metaFormat1, 0}
	if m.Draining {
		b[2] |= flagDraining
	}
	if m.Leaving {
		b[2] |= flagLeaving
	}
	b = appendString(b, m.Fingerprint)
	b = appendString(b, m.Version)
	names := sortedKeys(m.Services)
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, name := range names {
		b = appendString(b, name)
		insts := m.Services[name]
		b = binary.AppendUvarint(b, uint64(len(insts)))
		for _, inst := range insts {
			b = appendString(b, inst)
		}
	}
	return b
}

// encodeChecked encodes m and refuses anything memberlist would panic on.
func (m meta) encodeChecked() ([]byte, error) {
	b := m.encode()
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("node metadata is %d bytes, over memberlist's limit of %d bytes: advertise fewer instances or use shorter service names, instances or version",
			len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

var errMetaTruncated = errors.New("truncated")

// errMetaTooLarge: another node's metadata is over memberlist.MetaMaxSize
// bytes. memberlist enforces the size only on what a node sends, not on
// what it receives: a peer that crafts its messages could advertise
// thousands of instances, take most keys and slow every node's rebuilds.
// Within 512 bytes every count is bounded too: each item takes a byte at
// least, and count checks it against the bytes left.
var errMetaTooLarge = errors.New("metadata over the limit")

// metaReader reads the wire format; every read is bounds-checked against
// what is left, so no length field can make it allocate or index past the
// input.
type metaReader struct {
	b []byte
}

func (r *metaReader) uvarint() (uint64, error) {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		return 0, errMetaTruncated
	}
	r.b = r.b[n:]
	return v, nil
}

// count reads a number of items that each take at least one byte.
func (r *metaReader) count() (int, error) {
	v, err := r.uvarint()
	if err != nil {
		return 0, err
	}
	if v > uint64(len(r.b)) {
		return 0, errMetaTruncated
	}
	return int(v), nil
}

func (r *metaReader) str() (string, error) {
	v, err := r.uvarint()
	if err != nil {
		return "", err
	}
	if v > uint64(len(r.b)) {
		return "", errMetaTruncated
	}
	s := string(r.b[:v])
	r.b = r.b[v:]
	if !utf8.ValidString(s) {
		return "", errors.New("invalid UTF-8")
	}
	return s, nil
}

// decodeMeta parses another node's metadata. It never panics; anything it
// returns without error has valid service names and instances.
func decodeMeta(b []byte) (meta, error) {
	var m meta
	if len(b) == 0 {
		return m, errors.New("no metadata (not a ringman node?)")
	}
	if len(b) < 3 || b[0] != metaMagic {
		return m, errors.New("not ringman metadata")
	}
	if b[1] != metaFormat1 {
		return m, fmt.Errorf("unsupported metadata format %d (this node reads format %d)", b[1], metaFormat1)
	}
	if len(b) > memberlist.MetaMaxSize {
		return m, fmt.Errorf("%w: %d bytes, over memberlist's %d", errMetaTooLarge, len(b), memberlist.MetaMaxSize)
	}
	m.Draining = b[2]&flagDraining != 0
	m.Leaving = b[2]&flagLeaving != 0
	r := &metaReader{b: b[3:]}
	var err error
	if m.Fingerprint, err = r.str(); err != nil {
		return meta{}, fmt.Errorf("metadata fingerprint: %w", err)
	}
	if m.Version, err = r.str(); err != nil {
		return meta{}, fmt.Errorf("metadata version: %w", err)
	}
	nsvc, err := r.count()
	if err != nil {
		return meta{}, fmt.Errorf("metadata services: %w", err)
	}
	for range nsvc {
		name, err := r.str()
		if err != nil {
			return meta{}, fmt.Errorf("metadata service name: %w", err)
		}
		if err := ValidateServiceName(name); err != nil {
			return meta{}, fmt.Errorf("metadata: %w", err)
		}
		ninst, err := r.count()
		if err != nil {
			return meta{}, fmt.Errorf("metadata service %q: %w", name, err)
		}
		for range ninst {
			inst, err := r.str()
			if err != nil {
				return meta{}, fmt.Errorf("metadata service %q: %w", name, err)
			}
			canon, err := canonicalInstance(inst)
			if err != nil {
				return meta{}, fmt.Errorf("metadata service %q: %w", name, err)
			}
			if canon != inst {
				return meta{}, fmt.Errorf("metadata service %q: instance %q is not in canonical form (%q)", name, inst, canon)
			}
			if m.Services == nil {
				m.Services = make(map[string][]string)
			}
			m.Services[name] = append(m.Services[name], inst)
		}
	}
	for name, insts := range m.Services {
		m.Services[name] = sortDedup(insts)
	}
	return m, nil
}

// ValidateServiceName accepts the names a user can type on the command line:
// non-empty, printable, no separators used by the CLI or logs. The same rule
// applies to a node's own --service flags and to what other nodes advertise.
func ValidateServiceName(name string) error {
	if name == "" {
		return errors.New("empty service name")
	}
	if len(name) > 64 {
		return fmt.Errorf("service name %.20q... is over 64 bytes", name)
	}
	for _, c := range name {
		if c <= ' ' || c == 0x7f || c == '=' || c == ',' || c == '"' {
			return fmt.Errorf("service name %q: character %q not allowed", name, c)
		}
	}
	return nil
}

// maxNodeNameLen is the longest node name: a DNS name's limit, as node
// names default to the host name.
const maxNodeNameLen = 253

// ValidateNodeName accepts a node's name: 1 to 253 bytes of ASCII letters,
// digits, '.', '-' and '_', starting with a letter or a digit. That is
// every host name (the default name) and nothing that could break a log
// line, a terminal or the CLI's columns, or read as a flag. The same rule
// applies to this node's name (Config.Name) and to every other node: one
// whose name breaks it is refused at join, like one with other ring
// settings.
func ValidateNodeName(name string) error {
	if name == "" {
		return errors.New("node name is empty")
	}
	if len(name) > maxNodeNameLen {
		return fmt.Errorf("node name %.32q... is %d bytes, over %d", name, len(name), maxNodeNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if i == 0 && !alnum {
			return fmt.Errorf("node name %q: must start with a letter or a digit", name)
		}
		if !alnum && c != '.' && c != '-' && c != '_' {
			r, _ := utf8.DecodeRuneInString(name[i:])
			return fmt.Errorf("node name %q: character %q not allowed (letters, digits, '.', '-', '_')", name, r)
		}
	}
	return nil
}

// ValidateInstance accepts "host:port" with a non-empty host and a port in
// 1..65535: an instance as a node advertises it.
func ValidateInstance(inst string) error {
	host, port, err := net.SplitHostPort(inst)
	if err != nil {
		return fmt.Errorf("instance %q: want host:port: %v", inst, err)
	}
	if host == "" {
		return fmt.Errorf("instance %q: empty host", inst)
	}
	for _, c := range host {
		if c <= ' ' || c == 0x7f || c == '/' || c == ',' || c == '"' {
			return fmt.Errorf("instance %q: character %q not allowed in host", inst, c)
		}
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return fmt.Errorf("instance %q: port must be 1-65535", inst)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// sortDedup sorts s in place and drops duplicates.
func sortDedup(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// cloneServices deep-copies a service map.
func cloneServices(m map[string][]string) map[string][]string {
	if m == nil {
		return nil
	}
	out := make(map[string][]string, len(m))
	for k, v := range m {
		out[k] = slices.Clone(v)
	}
	return out
}
