package redisapi

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// parseAll parses every request in input, in one piece. It returns the
// arguments of each request with arguments, and the error that stopped it.
func parseAll(input []byte) ([][]string, error) {
	var p parser
	var out [][]string
	for len(input) > 0 {
		n, args, err := p.parse(input)
		if err != nil {
			return out, err
		}
		if n == 0 {
			return out, errIncomplete
		}
		if len(args) > 0 {
			out = append(out, toStrings(args))
		}
		input = input[n:]
	}
	return out, nil
}

var errIncomplete = errors.New("incomplete")

func toStrings(args [][]byte) []string {
	s := make([]string, len(args))
	for i, a := range args {
		s[i] = string(a)
	}
	return s
}

// parseChunked feeds input k bytes at a time, moving unparsed bytes the way
// a connection does, to exercise the parser's resumable state.
func parseChunked(input []byte, k int) ([][]string, error) {
	var p parser
	var out [][]string
	var buf []byte
	for fed := 0; ; {
		for len(buf) > 0 {
			n, args, err := p.parse(buf)
			if err != nil {
				return out, err
			}
			if n == 0 {
				break
			}
			if len(args) > 0 {
				out = append(out, toStrings(args))
			}
			buf = append([]byte(nil), buf[n:]...) // move, as makeRoom does
		}
		if fed == len(input) {
			if len(buf) > 0 {
				return out, errIncomplete
			}
			return out, nil
		}
		next := min(fed+k, len(input))
		buf = append(buf, input[fed:next]...)
		fed = next
	}
}

func TestParse(t *testing.T) {
	big := strings.Repeat("x", 60000)
	tests := []struct {
		name string
		in   string
		want [][]string
		err  error // nil, errIncomplete or a protocol error
	}{
		{"resp get", "*2\r\n$3\r\nget\r\n$4\r\n/a/b\r\n", [][]string{{"get", "/a/b"}}, nil},
		{"resp pipeline", "*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", [][]string{{"PING"}, {"GET", "k"}}, nil},
		{"resp empty arg", "*2\r\n$4\r\necho\r\n$0\r\n\r\n", [][]string{{"echo", ""}}, nil},
		{"resp binary arg", "*2\r\n$4\r\necho\r\n$4\r\n\r\n\x00 \r\n", [][]string{{"echo", "\r\n\x00 "}}, nil},
		{"resp zero count skipped", "*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n", [][]string{{"PING"}}, nil},
		{"resp large arg", "*2\r\n$3\r\nget\r\n$60000\r\n" + big + "\r\n", [][]string{{"get", big}}, nil},
		{"resp incomplete header", "*2\r", nil, errIncomplete},
		{"resp incomplete bulk", "*2\r\n$3\r\nget\r\n$5\r\nab", nil, errIncomplete},
		{"resp bad count", "*x\r\n", nil, errMultibulkLength},
		{"resp count with plus", "*+1\r\n", nil, errMultibulkLength},
		{"resp count leading zero", "*01\r\n", nil, errMultibulkLength},
		{"resp count without CR", "*1\n", nil, errMultibulkLength},
		{"resp count line too long", "*1111111111111111111111111", nil, errMultibulkLength},
		{"resp no dollar", "*1\r\n+PING\r\n", nil, errExpectedDollar['+']},
		{"resp negative bulk", "*1\r\n$-1\r\n", nil, errBulkLength},
		{"resp -2 bulk (panics redcon.ReadNextCommand)", "*1\r\n$-2\r\n", nil, errBulkLength},
		{"resp huge bulk", "*2\r\n$3\r\nget\r\n$2147483648\r\n", nil, errTooBig},
		{"resp max int bulk", "*1\r\n$9223372036854775807\r\n", nil, errTooBig},
		{"resp overflowing bulk", "*1\r\n$9223372036854775808\r\n", nil, errBulkLength},
		{"resp 70 KiB bulk", "*2\r\n$3\r\nget\r\n$71680\r\n", nil, errTooBig},
		{"resp bulk without CRLF", "*1\r\n$4\r\nPINGxx\r\n", nil, errBulkLength},
		{"resp too many args", "*1025\r\n", nil, errTooManyArgs},
		{"resp max args", request(make([]string, 1024)...), [][]string{make([]string, 1024)}, nil},
		{"inline", "get /some/key\r\n", [][]string{{"get", "/some/key"}}, nil},
		{"inline LF only", "PING\n", [][]string{{"PING"}}, nil},
		{"inline pipeline", "select 0\r\nget /some/key\r\n", [][]string{{"select", "0"}, {"get", "/some/key"}}, nil},
		{"inline spaces", "  get \t  k  \r\n", [][]string{{"get", "k"}}, nil},
		{"inline empty lines skipped", "\r\n \r\n\nPING\r\n", [][]string{{"PING"}}, nil},
		{"inline double quotes", `echo "a b\x41\n\"\\"` + "\r\n", [][]string{{"echo", "a bA\n\"\\"}}, nil},
		{"inline single quotes", `echo 'it\'s "x"'` + "\r\n", [][]string{{"echo", `it's "x"`}}, nil},
		{"inline quote mid-token", `a"b c" d` + "\r\n", [][]string{{"ab c", "d"}}, nil},
		{"inline empty quoted", `echo ""` + "\r\n", [][]string{{"echo", ""}}, nil},
		{"inline bad hex kept", `echo "\xZZ"` + "\r\n", [][]string{{"echo", "xZZ"}}, nil},
		{"inline NUL ends line", "echo a\x00b c\r\n", [][]string{{"echo", "a"}}, nil},
		{"inline unbalanced", `echo "abc` + "\r\n", nil, errQuotes},
		{"inline text after quote", `"a"b` + "\r\n", nil, errQuotes},
		{"inline unbalanced single", `'a` + "\r\n", nil, errQuotes},
		{"inline incomplete", "get /some", nil, errIncomplete},
		{"inline too many args", strings.Repeat("a ", 1025) + "\r\n", nil, errTooManyArgs},
		{"inline max args", strings.Repeat("a ", 1024) + "\r\n", [][]string{strings.Fields(strings.Repeat("a ", 1024))}, nil},
		{"inline 64 KiB line", strings.Repeat("a", MaxRequestBytes-2) + "\r\n", [][]string{{strings.Repeat("a", MaxRequestBytes-2)}}, nil},
		{"inline line over 64 KiB", strings.Repeat("a", MaxRequestBytes-1) + "\r\n", nil, errInlineTooBig},
		{"inline no newline in 64 KiB", strings.Repeat("a", MaxRequestBytes), nil, errInlineTooBig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []int{len(tt.in) + 1, 1, 3, 7, 4096} {
				got, err := parseChunked([]byte(tt.in), k)
				if err != tt.err {
					t.Fatalf("chunks of %d: err = %v, want %v", k, err, tt.err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("chunks of %d: got %q, want %q", k, got, tt.want)
				}
			}
		})
	}
}

func TestParseIntLikeRedis(t *testing.T) {
	good := map[string]int64{
		"0": 0, "1": 1, "-1": -1, "1024": 1024,
		"9223372036854775807": 1<<63 - 1, "-9223372036854775808": -1 << 63,
	}
	for in, want := range good {
		if got, ok := parseInt([]byte(in)); !ok || got != want {
			t.Errorf("parseInt(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "-", "+1", "01", "-0", " 1", "1 ", "1x", "9223372036854775808",
		"-9223372036854775809", "99999999999999999999", "0x10"} {
		if got, ok := parseInt([]byte(in)); ok {
			t.Errorf("parseInt(%q) = %d, ok; want an error", in, got)
		}
	}
}

// Protocol errors are single lines whatever byte caused them.
func TestProtocolErrorsAreOneLine(t *testing.T) {
	for i, e := range errExpectedDollar {
		if strings.ContainsAny(e.Error(), "\r\n") {
			t.Errorf("byte %d: error %q breaks the line", i, e.Error())
		}
	}
}
