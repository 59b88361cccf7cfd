package hostmap

import (
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"ringman/store"
)

// More seeds for every fuzz target live in testdata/fuzz/<FuzzName>.

// maxErrorLen bounds a validation error: the message reaches users as one
// line, whatever they sent (a 1 MiB host included).
const maxErrorLen = 400

// checkFieldError fails unless err is a one-line *FieldError on field.
func checkFieldError(t *testing.T, what string, err error, field string) {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != field {
		t.Fatalf("%s: error %v (%T), want a %s FieldError", what, err, err, field)
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\r\n") || len(msg) > maxErrorLen {
		t.Fatalf("%s: error is not one short line (%d bytes): %.500q", what, len(msg), msg)
	}
}

// isDNSName is README: HTTP API's host rule written plainly, as the oracle for
// NormalizeHost: ASCII letters, digits and '-', labels of 1 to 63 bytes
// that neither start nor end with '-', at most 253 bytes in all.
func isDNSName(h string) bool {
	if h == "" || len(h) > MaxHostLen {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return false
		}
		if strings.Trim(label, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			return false
		}
	}
	return true
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// FuzzNormalizeHost: an accepted host is a lower-case DNS name (optionally
// "*."), equal to the input up to ASCII case and one trailing dot, and
// normalising it again changes nothing; a rejected one gets a one-line
// host error.
func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{
		"some.host.com", "Some.Host.COM.", "*.Example.com", "localhost", "10.0.0.1", "a..b", "-a.com",
		"*.", "*", "a.*.com", "ünï.com", "\u212a.com", "a.com:80", "a\r\nb.com", strings.Repeat("a", 64) + ".com",
		strings.Repeat("abcdefghi.", 26), "", ".", "..", "xn--bcher-kva.example",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		h, err := NormalizeHost(host)
		if err != nil {
			checkFieldError(t, "NormalizeHost("+strconv.Quote(host)+")", err, "host")
			if h != "" {
				t.Fatalf("NormalizeHost(%q) returned %q with error %v", host, h, err)
			}
			return
		}
		if !isDNSName(strings.TrimPrefix(h, "*.")) || len(h) > MaxHostLen {
			t.Fatalf("NormalizeHost(%q) = %q: not a DNS name", host, h)
		}
		if want := strings.TrimSuffix(asciiLower(host), "."); h != want {
			t.Fatalf("NormalizeHost(%q) = %q, want %q (ASCII lower case, no trailing dot)", host, h, want)
		}
		if again, err := NormalizeHost(h); err != nil || again != h {
			t.Fatalf("NormalizeHost is not idempotent: %q -> %q -> %q, %v", host, h, again, err)
		}
	})
}

// FuzzValidateBackend: an accepted backend is canonical host:port (what
// net.JoinHostPort would write) with a decimal port from 1 to 65535 and a
// host that is an IP address or a DNS name; a rejected one gets a one-line
// backend error.
func FuzzValidateBackend(f *testing.F) {
	for _, s := range []string{
		"localhost:3000", "10.0.0.5:8080", "[::1]:80", "Backend.Example.com:65535", "a:1", "", "localhost", ":80",
		"h:0", "h:65536", "h:+80", "h:0080", "h:-1", "[1.2.3.4]:80", "[a.com]:80", "::1:80", "[fe80::1%eth0]:80",
		"h:80:90", "h_x:80", "h: 80", "h:99999999999999999999", strings.Repeat("x", 300) + ":80",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, backend string) {
		err := ValidateBackend(backend)
		if err != nil {
			checkFieldError(t, "ValidateBackend("+strconv.Quote(backend)+")", err, "backend")
			return
		}
		host, port, err := net.SplitHostPort(backend)
		if err != nil {
			t.Fatalf("accepted %q, which is not host:port: %v", backend, err)
		}
		if canon := net.JoinHostPort(host, port); canon != backend {
			t.Fatalf("accepted %q, not in canonical form %q", backend, canon)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || strings.Trim(port, "0123456789") != "" {
			t.Fatalf("accepted %q with port %q", backend, port)
		}
		if net.ParseIP(host) == nil && !isDNSName(asciiLower(host)) {
			t.Fatalf("accepted %q with host %q, neither an IP address nor a DNS name", backend, host)
		}
	})
}

// keyHost is README: How it decides's host part of a key, written plainly: the text before
// the first '/' unless the key starts with '/', without a ":port" suffix
// and without one trailing dot (the form a Host header may have), ASCII
// lower-cased.
func keyHost(key string) string {
	if strings.HasPrefix(key, "/") {
		return ""
	}
	host, _, _ := strings.Cut(key, "/")
	host, _, _ = strings.Cut(host, ":")
	return asciiLower(strings.TrimSuffix(host, "."))
}

// matchOracle is Match without its prefilter and wildcard-depth shortcuts:
// the exact host, then "*." + each shorter suffix, nearest first (a
// wildcard stands for at least one byte: ".example.com" is not under
// "*.example.com").
func matchOracle(entries map[string]string, key string) string {
	host := keyHost(key)
	if host == "" || len(host) > MaxHostLen {
		return "" // no DNS name is longer, so no override can match it
	}
	if b, ok := entries[host]; ok {
		return b
	}
	for i := 1; i < len(host); i++ {
		if host[i] == '.' {
			if b, ok := entries["*"+host[i:]]; ok {
				return b
			}
		}
	}
	return ""
}

// fuzzOverrides are the entries FuzzMatch's table holds: wildcards at
// several depths, a host under a wildcard, hosts of the longest lengths.
var fuzzOverrides = []Pair{
	{"*.example.com", "h:1"},
	{"a.example.com", "h:2"},
	{"*.b.example.com", "h:3"},
	{"x.y.z.example.org", "h:4"},
	{"*.org", "h:5"},
	{"localhost", "h:6"},
	{strings.Repeat("l", 63) + ".example.net", "h:7"},
	{strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61), "h:8"},
	{"*.1.2.3", "h:9"},
}

func openFuzzTable(f *testing.F, pairs []Pair) *Table {
	st, err := store.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	tb, err := Open(st.DB(), Options{Node: "f"})
	if err != nil {
		st.Close()
		f.Fatal(err)
	}
	f.Cleanup(func() { tb.Close(); st.Close() })
	if len(pairs) > 0 {
		if _, err := tb.SetMany(pairs); err != nil {
			f.Fatal(err)
		}
	}
	return tb
}

// FuzzKeyHost checks the lookup side of overrides against README: How it decides written
// plainly: Match answers what matchOracle answers for every key, and it
// depends only on the key's host part (case, port and path do not matter).
func FuzzKeyHost(f *testing.F) {
	for _, k := range []string{
		"a.example.com/x", "EXAMPLE.com:80/", "/x", "", ".", "*.example.com", "a..example.com", "q.b.example.com/p",
		"Q.B.Example.COM:8080/p?x=1", "deep.x.y.z.example.org/", "x.y.z.example.org.:443/a", "localhost", "localhost.",
		"localhost:6380", "a.example.com./x", "b.example.com", ".example.com/", "example.com", "1.2.3/x", "4.1.2.3",
		"[::1]:80/x", "k.example.com\x00/x", "\u212a.example.com/x",
	} {
		f.Add(k)
	}
	tb := openFuzzTable(f, fuzzOverrides)
	entries := map[string]string{}
	for _, e := range tb.List() {
		entries[e.Host] = e.Backend
	}
	// Without the wildcards of fewer than 8 bytes after the "*." ("*.org"),
	// Match first looks up the host's last 8 bytes among the wildcards'.
	var longPairs []Pair
	for _, p := range fuzzOverrides {
		if rest, ok := strings.CutPrefix(p.Host, "*."); !ok || len(rest) >= 8 {
			longPairs = append(longPairs, p)
		}
	}
	long := openFuzzTable(f, longPairs)
	longEntries := map[string]string{}
	for _, e := range long.List() {
		longEntries[e.Host] = e.Backend
	}
	f.Fuzz(func(t *testing.T, key string) {
		if m, want := long.Match([]byte(key)), matchOracle(longEntries, key); want == "" && m != nil || want != "" && (len(m) != 1 || m[0] != want) {
			t.Fatalf("without short wildcards, Match(%q) = %q, want %q", key, m, want)
		}
		got := ""
		if m := tb.Match([]byte(key)); m != nil {
			if len(m) != 1 {
				t.Fatalf("Match(%q) = %q, want at most one backend", key, m)
			}
			got = m[0]
		}
		if want := matchOracle(entries, key); got != want {
			t.Fatalf("Match(%q) = %q, want %q (host part %q)", key, got, want, keyHost(key))
		}
		// Only the host part counts: the same host in another case, with a
		// trailing dot, a port and another path, gets the same answer.
		if host := keyHost(key); host != "" && !strings.ContainsAny(host, ":/") {
			// ASCII upper case: strings.ToUpper would turn invalid UTF-8 into
			// U+FFFD, a longer and different host.
			other := upperASCII(host) + ".:1/other/path"
			if m := tb.Match([]byte(other)); got == "" && m != nil || got != "" && (m == nil || m[0] != got) {
				t.Fatalf("Match(%q) = %q but Match(%q) = %q", key, got, other, m)
			}
		}
	})
}

// upperASCII upper-cases ASCII letters only, as hosts are compared.
func upperASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - ('a' - 'A')
		}
	}
	return string(b)
}

// FuzzSetOverride: Set accepts exactly the pairs NormalizeHost and
// ValidateBackend accept. An accepted pair is stored as normalised, read
// back by Get and List and answered by Match for keys of that host; a
// rejected one changes nothing. Each accepted pair is deleted again, so
// the table stays small.
func FuzzSetOverride(f *testing.F) {
	for _, p := range [][2]string{
		{"some.host.com", "10.0.0.5:3000"}, {"Some.Host.COM.", "localhost:3000"}, {"*.example.com", "[::1]:80"},
		{"a..b", "h:1"}, {"ok.com", "h:0"}, {"ok.com", "h:+1"}, {"\u212a.com", "h:1"}, {"ok.com", "[1.2.3.4]:80"},
		{strings.Repeat("a", 300), "h:1"}, {"ok.com", strings.Repeat("b", 300) + ":1"}, {"keep.example.com", "h:2"},
	} {
		f.Add(p[0], p[1])
	}
	tb := openFuzzTable(f, []Pair{{"keep.example.com", "10.9.9.9:9"}})
	f.Fuzz(func(t *testing.T, host, backend string) {
		before := tb.List()
		h, herr := NormalizeHost(host)
		berr := ValidateBackend(backend)
		e, err := tb.Set(host, backend)
		if herr != nil || berr != nil {
			if err == nil {
				t.Fatalf("Set(%q, %q) accepted what validation refuses (%v, %v)", host, backend, herr, berr)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Set(%q, %q): %v, want a FieldError", host, backend, err)
			}
			if after := tb.List(); !slices.Equal(before, after) {
				t.Fatalf("a refused Set(%q, %q) changed the table:\n%v\n%v", host, backend, before, after)
			}
			return
		}
		if err != nil {
			t.Fatalf("Set(%q, %q): %v", host, backend, err)
		}
		if e.Host != h || e.Backend != backend {
			t.Fatalf("Set(%q, %q) stored %+v, want host %q", host, backend, e, h)
		}
		if got, ok := tb.Get(host); !ok || got != e {
			t.Fatalf("Get(%q) = %+v, %v after Set stored %+v", host, got, ok, e)
		}
		if !slices.Contains(tb.List(), e) {
			t.Fatalf("List lacks %+v", e)
		}
		key := strings.Replace(host, "*", "any", 1) + "/path"
		if m := tb.Match([]byte(key)); m == nil || m[0] != backend {
			t.Fatalf("Match(%q) = %q after Set(%q, %q)", key, m, host, backend)
		}
		if _, err := tb.Delete(host); err != nil {
			t.Fatalf("Delete(%q): %v", host, err)
		}
		if h == "keep.example.com" {
			if _, err := tb.Set(h, "10.9.9.9:9"); err != nil {
				t.Fatal(err)
			}
		} else if m := tb.Match([]byte(key)); m != nil {
			t.Fatalf("Match(%q) = %q after Delete(%q)", key, m, host)
		}
	})
}
