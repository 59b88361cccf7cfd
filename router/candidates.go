package router

import (
	"fmt"

	"ringman/ring"
)

// MaxCandidates is the most candidates a lookup may ask for, on every
// protocol: the ring keeps no longer preference lists.
const MaxCandidates = ring.MaxCandidates

// CandidatesRule says which counts of candidates a lookup accepts, for the
// protocols' error messages: RESP, HTTP and the CLI all refuse any other
// count with it rather than each clamping or rounding in its own way, so
// that a count that works in one works in all.
var CandidatesRule = fmt.Sprintf("a whole number from 1 to %d", MaxCandidates)

// ParseCandidates reads a count of candidates as a protocol receives it:
// decimal digits only, 1 to MaxCandidates. It does not allocate. An absent
// count means 1; what absent is stays the caller's (RESP: no argument, HTTP:
// no or an empty n, the CLI: no -n).
func ParseCandidates[T ~string | ~[]byte](s T) (int, bool) {
	// Leading zeros are harmless; the bound on the length keeps n from
	// overflowing before the range check.
	if len(s) == 0 || len(s) > 8 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if !ValidCandidates(n) {
		return 0, false
	}
	return n, true
}

// ValidCandidates reports whether a lookup may ask for n candidates.
func ValidCandidates(n int) bool { return 1 <= n && n <= MaxCandidates }
