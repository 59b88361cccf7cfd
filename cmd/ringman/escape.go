package main

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// What the CLI prints from a node's answers was partly written by other
// nodes (member names, services, overrides' hosts and nodes, error texts):
// a peer must not be able to forge lines or drive the terminal through
// them. Every non-printable byte is printed escaped, as Go quotes it.

// cell returns s as one column value: as it is when it is plain (printable,
// no space, quote or backslash, not empty), else quoted with its bytes
// escaped, so that it stays one unambiguous field on one line.
func cell(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return r == ' ' || r == '"' || r == '\\' || r == utf8.RuneError || !strconv.IsPrint(r)
	}) {
		return s
	}
	return strconv.Quote(s)
}

// escapeText returns a line of text (an error message) with every
// non-printable rune and invalid byte escaped, the rest as it is.
func escapeText(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r == utf8.RuneError || !strconv.IsPrint(r) }) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size <= 1) || !strconv.IsPrint(r) {
			q := strconv.Quote(s[i : i+size])
			b.WriteString(q[1 : len(q)-1])
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
