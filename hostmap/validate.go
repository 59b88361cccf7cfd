package hostmap

import (
	"net"
	"strconv"
	"strings"
)

// NormalizeHost checks that host is a DNS name, optionally "*."-prefixed,
// and returns it lower-cased without a trailing dot. Only ASCII letters are
// lower-cased: Unicode case mapping would turn the Kelvin sign "\u212a"
// into "k" and accept a name no resolver knows.
func NormalizeHost(host string) (string, error) {
	h := strings.TrimSuffix(lowerASCII(host), ".")
	if h == "" {
		return "", &FieldError{"host", "is empty"}
	}
	if len(h) > MaxHostLen {
		return "", &FieldError{"host", "is longer than 253 bytes"}
	}
	name := strings.TrimPrefix(h, "*.")
	if err := checkDNSName(name); err != "" {
		return "", &FieldError{"host", quoteShort(host) + " is not a DNS name: " + err}
	}
	return h, nil
}

// lowerASCII lower-cases the ASCII letters of s and leaves every other byte
// as it is.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// quoteShort quotes s for an error message, cut to 64 bytes of quoted text: a
// message stays one short line whatever a client sent.
func quoteShort(s string) string {
	const max = 64 // bytes of quoted text
	if q := strconv.Quote(s); len(q) <= max {
		return q
	}
	// Escapes take up to 4 bytes per input byte (\xb9): cut the input
	// until its quoted form fits, so that errors stay one short line.
	n := min(len(s), max)
	for n > 0 && len(strconv.Quote(s[:n])) > max-3 {
		n--
	}
	return strconv.Quote(s[:n]) + "..."
}

// checkDNSName returns why name is not a DNS name, or "".
func checkDNSName(name string) string {
	if name == "" {
		return "no labels"
	}
	for label := range strings.SplitSeq(name, ".") {
		switch {
		case label == "":
			return "empty label"
		case len(label) > 63:
			return "a label is longer than 63 bytes"
		case label[0] == '-' || label[len(label)-1] == '-':
			return "a label starts or ends with '-'"
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "only letters, digits, '-' and '.' (and a leading '*.') are allowed"
			}
		}
	}
	return ""
}

// ValidateBackend checks that backend is host:port with a port from 1 to
// 65535 in decimal digits, the host being a DNS name or an IP address, in
// the form net.JoinHostPort writes: brackets around IPv6 addresses and
// nowhere else. nginx, Go's net package and ringman.lua all read that form;
// "h:+80" or "[10.0.0.5]:80" would pass net.SplitHostPort and strconv.Atoi
// but fail in some of them.
func ValidateBackend(backend string) error {
	host, port, err := net.SplitHostPort(backend)
	if err != nil {
		return &FieldError{"backend", quoteShort(backend) + " is not host:port"}
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || len(port) > 5 || strings.Trim(port, "0123456789") != "" {
		return &FieldError{"backend", "port " + quoteShort(port) + " is not a number from 1 to 65535"}
	}
	if host == "" {
		return &FieldError{"backend", "host is empty"}
	}
	if canonical := net.JoinHostPort(host, port); canonical != backend {
		return &FieldError{"backend", quoteShort(backend) + " is not host:port (brackets go around IPv6 addresses only: " + quoteShort(canonical) + ")"}
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	if len(host) > MaxHostLen {
		return &FieldError{"backend", "host is longer than 253 bytes"}
	}
	if why := checkDNSName(lowerASCII(host)); why != "" {
		return &FieldError{"backend", "host " + quoteShort(host) + " is not a DNS name or IP address: " + why}
	}
	return nil
}
