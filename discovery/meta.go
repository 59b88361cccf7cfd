package discovery

import (
	"crypto/sha256"
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
//	flags                       byte: 1 draining, 2 leaving, 4 services digest,
//	                            8 health check failing (a reason of the drain)
//	str fingerprint, str version
//	services
//	[uvarint size, 16-byte hash]  only with flag 4
//
// where services is uvarint n, then per service: str name, uvarint n,
// n × str instance; and str is a uvarint length followed by that many bytes.
// Bytes after the last field are ignored, so that later releases can append
// fields without changing the format version.
//
// Services that fit go inline, as above, byte for byte as before flag 4
// existed. Those that do not (up to maxServices services, maxInstances
// instances, maxServicesBytes encoded) go elsewhere: the metadata lists no
// services (n = 0) and carries flag 4 and the digest of their canonical
// encoding (the services field as it would be inline): its size and the
// first 16 bytes of its SHA-256. Each other node fetches that encoding from
// the node itself (services.go) and uses it only once it hashes to the
// digest; a cryptographic hash, so that no member can make up services
// that pass for another's. A node of an older release ignores flag 4 and
// the digest: it sees such a node with no services.
type meta struct {
	Draining bool
	// CheckFailing: the node's health check fails (and drains it).
	CheckFailing bool
	Leaving      bool
	Fingerprint  string
	Version      string
	Services     map[string][]string // sorted, deduplicated instances
	// Digest, when set, stands in the metadata for Services, which travel
	// separately; decodeMeta then leaves Services nil.
	Digest servicesDigest
}

// servicesDigest identifies a canonical services encoding. The zero value
// means none: the services are inline.
type servicesDigest struct {
	size int
	hash [digestHashLen]byte
}

const digestHashLen = 16

func digestOf(encoded []byte) servicesDigest {
	sum := sha256.Sum256(encoded)
	return servicesDigest{size: len(encoded), hash: [digestHashLen]byte(sum[:digestHashLen])}
}

func (d servicesDigest) String() string { return fmt.Sprintf("%x/%d", d.hash, d.size) }

const (
	metaMagic   = 'R'
	metaFormat1 = 1

	flagDraining       = 1 << 0
	flagLeaving        = 1 << 1
	flagServicesDigest = 1 << 2
	flagCheckFailing   = 1 << 3

	// The bounds of what a node advertises, inline or not. Past 512 bytes
	// the services leave the metadata, and every node fetches and keeps
	// them (rebuilding a ring per service), so they stay bounded: 64 KiB
	// holds 1,024 services of two instances like "svc-042=10.1.2.3:8080"
	// (about 40 bytes each) with room to spare.
	maxServicesBytes = 64 << 10
	maxServices      = 1024
	maxInstances     = 4096
)

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// encode returns the wire form of m: inline services, or the digest that
// stands for them when m.Digest is set. Services are written in sorted order
// so that the same meta always encodes to the same bytes (memberlist
// compares meta bytes to decide whether to report an update).
func (m meta) encode() []byte {
	b := []byte{metaMagic, metaFormat1, 0}
	if m.Draining {
		b[2] |= flagDraining
	}
	if m.Leaving {
		b[2] |= flagLeaving
	}
	if m.CheckFailing {
		b[2] |= flagCheckFailing
	}
	b = appendString(b, m.Fingerprint)
	b = appendString(b, m.Version)
	if m.Digest == (servicesDigest{}) {
		return appendServices(b, m.Services)
	}
	b[2] |= flagServicesDigest
	b = binary.AppendUvarint(b, 0) // no services inline
	return appendDigest(b, m.Digest)
}

// appendServices appends the canonical encoding of services: the services
// field of the wire format.
func appendServices(b []byte, services map[string][]string) []byte {
	names := sortedKeys(services)
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, name := range names {
		b = appendString(b, name)
		insts := services[name]
		b = binary.AppendUvarint(b, uint64(len(insts)))
		for _, inst := range insts {
			b = appendString(b, inst)
		}
	}
	return b
}

// advertise returns m as this node advertises it, with its metadata's wire
// form and, when the services do not fit inline, their canonical encoding
// (m.Digest is then set; nil and unset when they fit). It refuses anything
// memberlist would panic on, and services past the bounds.
func advertise(m meta) (meta, []byte, []byte, error) {
	m.Digest = servicesDigest{}
	if b := m.encode(); len(b) <= memberlist.MetaMaxSize {
		return m, b, nil, nil
	}
	total := 0
	for _, insts := range m.Services {
		total += len(insts)
	}
	if len(m.Services) > maxServices || total > maxInstances {
		return meta{}, nil, nil, fmt.Errorf("node advertises %d services with %d instances, over the limit of %d services and %d instances",
			len(m.Services), total, maxServices, maxInstances)
	}
	services := appendServices(nil, m.Services)
	if len(services) > maxServicesBytes {
		return meta{}, nil, nil, fmt.Errorf("node's services take %d bytes, over the limit of %d bytes: advertise fewer instances or use shorter service names or instances",
			len(services), maxServicesBytes)
	}
	m.Digest = digestOf(services)
	b := m.encode()
	if len(b) > memberlist.MetaMaxSize {
		return meta{}, nil, nil, fmt.Errorf("node metadata is %d bytes without its services, over memberlist's limit of %d bytes: use a shorter fingerprint or version",
			len(b), memberlist.MetaMaxSize)
	}
	return m, b, services, nil
}

var errMetaTruncated = errors.New("truncated")

// errMetaTooLarge: another node's metadata is over memberlist.MetaMaxSize
// bytes. memberlist enforces the size only on what a node sends, not on
// what it receives: a peer that crafts its messages could advertise
// thousands of instances, take most keys and slow every node's rebuilds.
// Within 512 bytes every count is bounded too: each item takes a byte at
// least, and count checks it against the bytes left. Services fetched
// from a node are bounded by maxServicesBytes, maxServices and
// maxInstances.
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
// returns without error has valid service names and instances, or a digest
// standing for them (and no services).
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
	m.CheckFailing = b[2]&flagCheckFailing != 0
	r := &metaReader{b: b[3:]}
	var err error
	if m.Fingerprint, err = r.str(); err != nil {
		return meta{}, fmt.Errorf("metadata fingerprint: %w", err)
	}
	if m.Version, err = r.str(); err != nil {
		return meta{}, fmt.Errorf("metadata version: %w", err)
	}
	if m.Services, err = r.services(); err != nil {
		return meta{}, fmt.Errorf("metadata: %w", err)
	}
	if b[2]&flagServicesDigest == 0 {
		return m, nil
	}
	if m.Services != nil {
		return meta{}, errors.New("metadata has both services and a services digest")
	}
	if m.Digest, err = r.digest(); err != nil {
		return meta{}, fmt.Errorf("metadata services digest: %w", err)
	}
	return m, nil
}

// decodeServices parses a canonical services encoding fetched from another
// node, which must hash to want. It never panics.
func decodeServices(b []byte, want servicesDigest) (map[string][]string, error) {
	if len(b) > maxServicesBytes {
		return nil, fmt.Errorf("%w: services of %d bytes, over %d", errMetaTooLarge, len(b), maxServicesBytes)
	}
	if got := digestOf(b); got != want {
		return nil, fmt.Errorf("services digest is %v, want %v (the node's metadata)", got, want)
	}
	r := &metaReader{b: b}
	services, err := r.services()
	if err != nil {
		return nil, err
	}
	if len(r.b) > 0 {
		return nil, fmt.Errorf("services: %d bytes after the last one", len(r.b))
	}
	return services, nil
}

// services reads the services field: at most maxServices services and
// maxInstances instances, each valid, or nil when there are none.
func (r *metaReader) services() (map[string][]string, error) {
	nsvc, err := r.count()
	if err != nil {
		return nil, fmt.Errorf("services: %w", err)
	}
	if nsvc > maxServices {
		return nil, fmt.Errorf("%w: %d services, over %d", errMetaTooLarge, nsvc, maxServices)
	}
	var services map[string][]string
	total := 0
	for range nsvc {
		name, err := r.str()
		if err != nil {
			return nil, fmt.Errorf("service name: %w", err)
		}
		if err := ValidateServiceName(name); err != nil {
			return nil, err
		}
		ninst, err := r.count()
		if err != nil {
			return nil, fmt.Errorf("service %q: %w", name, err)
		}
		if total += ninst; total > maxInstances {
			return nil, fmt.Errorf("%w: over %d instances", errMetaTooLarge, maxInstances)
		}
		for range ninst {
			inst, err := r.str()
			if err != nil {
				return nil, fmt.Errorf("service %q: %w", name, err)
			}
			canon, err := canonicalInstance(inst)
			if err != nil {
				return nil, fmt.Errorf("service %q: %w", name, err)
			}
			if canon != inst {
				return nil, fmt.Errorf("service %q: instance %q is not in canonical form (%q)", name, inst, canon)
			}
			if services == nil {
				services = make(map[string][]string)
			}
			services[name] = append(services[name], inst)
		}
	}
	for name, insts := range services {
		services[name] = sortDedup(insts)
	}
	return services, nil
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
