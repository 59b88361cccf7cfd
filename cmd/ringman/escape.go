package main

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
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

// escapeJSON escapes, as \uXXXX, the non-printable runes that encoding/json
// writes as they are (it escapes only those below U+0020, U+2028, U+2029
// and <, >, &): DEL, C1 controls, bidirectional and zero-width format
// characters. Outside strings, JSON from MarshalIndent has only printable
// ASCII, spaces and newlines, so every rune escaped is inside a string.
func escapeJSON(raw []byte) []byte {
	var out []byte
	for i := 0; i < len(raw); {
		r, size := utf8.DecodeRune(raw[i:])
		if r == '\n' || (strconv.IsPrint(r) && r != utf8.RuneError) {
			if out != nil {
				out = append(out, raw[i:i+size]...)
			}
			i += size
			continue
		}
		if out == nil {
			out = append(make([]byte, 0, len(raw)+16), raw[:i]...)
		}
		if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		} else {
			out = fmt.Appendf(out, `\u%04x`, r)
		}
		i += size
	}
	if out == nil {
		return raw
	}
	return out
}
