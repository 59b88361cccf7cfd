package hostmap

import (
	"net"
	"strconv"
	"strings"
)

// NormalizeHost checks that host is a DNS name, optionally "*."-prefixed,
// and returns it lower-cased without a trailing dot.
func NormalizeHost(host string) (string, error) {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "" {
		return "", &FieldError{"host", "is empty"}
	}
	if len(h) > MaxHostLen {
		return "", &FieldError{"host", "is longer than 253 bytes"}
	}
	name := strings.TrimPrefix(h, "*.")
	if err := checkDNSName(name); err != "" {
		return "", &FieldError{"host", strconv.Quote(host) + " is not a DNS name: " + err}
	}
	return h, nil
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
// 65535, the host being a DNS name or an IP address.
func ValidateBackend(backend string) error {
	host, port, err := net.SplitHostPort(backend)
	if err != nil {
		return &FieldError{"backend", strconv.Quote(backend) + " is not host:port"}
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return &FieldError{"backend", "port " + strconv.Quote(port) + " is not a number from 1 to 65535"}
	}
	if host == "" {
		return &FieldError{"backend", "host is empty"}
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	if len(host) > MaxHostLen {
		return &FieldError{"backend", "host is longer than 253 bytes"}
	}
	if why := checkDNSName(strings.ToLower(host)); why != "" {
		return &FieldError{"backend", "host " + strconv.Quote(host) + " is not a DNS name or IP address: " + why}
	}
	return nil
}

// hostOf returns the host part of a lookup key (SPEC §2): the text before
// the first '/' when the key does not start with '/', without a ":port"
// suffix. It is not lower-cased.
func hostOf(key []byte) []byte {
	if len(key) == 0 || key[0] == '/' {
		return nil
	}
	for i, c := range key {
		if c == '/' {
			key = key[:i]
			break
		}
	}
	for i, c := range key {
		if c == ':' {
			return key[:i]
		}
	}
	return key
}
