package redisapi

import (
	"bytes"
	"strconv"
)

// Limits on one request, whatever the framing (README: Redis protocol). A request that
// exceeds them is refused with an error reply and the connection is closed,
// so that what a client sends never grows the server's memory.
const (
	// MaxRequestBytes bounds one request: a RESP array with all its headers
	// and bulk bodies, or one inline line with its line ending.
	MaxRequestBytes = 64 << 10
	// MaxArgs bounds the number of arguments (command name included).
	MaxArgs = 1024
)

// maxLenLine is the longest "*<count>" or "$<len>" header we wait for: a
// 64-bit integer has at most 20 characters. A longer header is an error, not
// a reason to keep reading.
const maxLenLine = 24

// protocolError is a malformed or oversized request. The connection answers
// "-ERR Protocol error: <msg>" and closes, as Redis does.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "ERR Protocol error: " + e.msg }

// Redis's own wording where Redis has one, so clients and people recognise them.
var (
	errMultibulkLength = &protocolError{"invalid multibulk length"}
	errBulkLength      = &protocolError{"invalid bulk length"}
	errInlineTooBig    = &protocolError{"too big inline request"}
	errQuotes          = &protocolError{"unbalanced quotes in request"}
	errTooBig          = &protocolError{"request larger than " + strconv.Itoa(MaxRequestBytes) + " bytes"}
	errTooManyArgs     = &protocolError{"more than " + strconv.Itoa(MaxArgs) + " arguments in request"}
	errExpectedDollar  [256]*protocolError
)

func init() {
	// Preallocated so that refusing garbage allocates nothing either.
	for i := range errExpectedDollar {
		c := byte(i)
		if c == '\r' || c == '\n' {
			c = ' ' // an error line must not break the reply stream
		}
		errExpectedDollar[i] = &protocolError{"expected '$', got '" + string([]byte{c}) + "'"}
	}
}

// parser splits a connection's input into requests. It keeps its progress
// through an incomplete request between calls, so a request that arrives a
// few bytes at a time is scanned once, not once per read.
//
// Offsets are relative to the start of the request, which stays valid when
// the connection moves unparsed bytes to the front of its buffer.
type parser struct {
	args [][]byte // the last request's arguments; reused

	// Progress through an incomplete request.
	want    int   // RESP: argument count from the "*" header; 0 before it is read
	pos     int   // RESP: where the next "$" header starts
	marks   []int // RESP: start and length of each argument read so far
	scanned int   // inline: bytes already searched for the line end
}

// parse reads one request from the front of b. It returns the number of bytes
// the request took (0: incomplete, read more) and its arguments, which point
// into b and stay valid until the next call. A request with no arguments (an
// empty line, "*0") takes bytes and returns no arguments: the caller skips it.
func (p *parser) parse(b []byte) (n int, args [][]byte, err error) {
	if len(b) == 0 {
		return 0, nil, nil
	}
	if b[0] == '*' {
		return p.parseMultibulk(b)
	}
	return p.parseInline(b)
}

func (p *parser) reset() {
	p.want, p.pos, p.scanned = 0, 0, 0
	p.marks = p.marks[:0]
}

func (p *parser) parseMultibulk(b []byte) (int, [][]byte, error) {
	if p.want == 0 {
		count, next, ok, err := readLenLine(b, 0, errMultibulkLength)
		if !ok || err != nil {
			return 0, nil, err
		}
		if count <= 0 {
			// Redis skips "*0" and "*-1" without a reply.
			return next, p.args[:0], nil
		}
		if count > MaxArgs {
			return 0, nil, errTooManyArgs
		}
		p.want, p.pos = int(count), next
	}
	for len(p.marks) < 2*p.want {
		i := p.pos
		if i >= len(b) {
			return p.incomplete(b)
		}
		if b[i] != '$' {
			return 0, nil, errExpectedDollar[b[i]]
		}
		size, start, ok, err := readLenLine(b, i, errBulkLength)
		if err != nil {
			return 0, nil, err
		}
		if !ok {
			return p.incomplete(b)
		}
		if size < 0 {
			return 0, nil, errBulkLength
		}
		if size > MaxRequestBytes || start+int(size)+2 > MaxRequestBytes {
			return 0, nil, errTooBig
		}
		end := start + int(size)
		if end+2 > len(b) {
			return p.incomplete(b)
		}
		if b[end] != '\r' || b[end+1] != '\n' {
			return 0, nil, errBulkLength
		}
		p.marks = append(p.marks, start, int(size))
		p.pos = end + 2
	}
	args := p.args[:0]
	for i := 0; i < len(p.marks); i += 2 {
		start, size := p.marks[i], p.marks[i+1]
		args = append(args, b[start:start+size:start+size])
	}
	n := p.pos
	p.args = args
	p.reset()
	return n, args, nil
}

// incomplete is the answer for a RESP request that needs more bytes.
func (p *parser) incomplete(b []byte) (int, [][]byte, error) {
	if len(b) >= MaxRequestBytes {
		return 0, nil, errTooBig
	}
	return 0, nil, nil
}

// readLenLine reads the "*<n>\r\n" or "$<n>\r\n" header that starts at b[i].
// ok is false when the line is not complete yet.
func readLenLine(b []byte, i int, bad *protocolError) (n int64, next int, ok bool, err error) {
	limit := min(len(b), i+maxLenLine)
	j := bytes.IndexByte(b[i+1:limit], '\n')
	if j < 0 {
		if limit-i >= maxLenLine {
			return 0, 0, false, bad
		}
		if len(b) >= MaxRequestBytes {
			return 0, 0, false, errTooBig
		}
		return 0, 0, false, nil
	}
	nl := i + 1 + j
	if b[nl-1] != '\r' {
		return 0, 0, false, bad
	}
	n, ok = parseInt(b[i+1 : nl-1])
	if !ok {
		return 0, 0, false, bad
	}
	return n, nl + 1, true, nil
}

// parseInt parses a decimal integer the way Redis's string2ll does: an
// optional minus sign, no plus sign, no leading zeros, no spaces, no overflow.
func parseInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 19 || (b[0] == '0' && (len(b) > 1 || neg)) {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0') // 19 digits cannot overflow a uint64
	}
	switch {
	case neg && n <= 1<<63:
		return int64(-n), true
	case !neg && n <= 1<<63-1:
		return int64(n), true
	}
	return 0, false
}

// parseInline reads one inline command: a line split into arguments the way
// redis-cli and telnet users expect (Redis's sdssplitargs: spaces separate,
// "double quotes" take \n \r \t \b \a \\ \" and \xHH escapes, 'single quotes'
// take \'). Unquoting happens in place, so it allocates nothing.
func (p *parser) parseInline(b []byte) (int, [][]byte, error) {
	j := bytes.IndexByte(b[p.scanned:], '\n')
	if j < 0 {
		p.scanned = len(b)
		if len(b) >= MaxRequestBytes {
			return 0, nil, errInlineTooBig
		}
		return 0, nil, nil
	}
	nl := p.scanned + j
	p.scanned = 0
	if nl+1 > MaxRequestBytes {
		return 0, nil, errInlineTooBig
	}
	line := b[:nl]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	args, err := splitInline(line, p.args[:0])
	if err != nil {
		return 0, nil, err
	}
	p.args = args
	return nl + 1, args, nil
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func hexValue(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// splitInline splits line into args in place, following sdssplitargs. Every
// output byte comes from at least one input byte already read, so writing at
// w never overwrites input not yet read.
func splitInline(line []byte, args [][]byte) ([][]byte, error) {
	// sdssplitargs works on a C string: a NUL byte ends the line.
	if i := bytes.IndexByte(line, 0); i >= 0 {
		line = line[:i]
	}
	n := len(line)
	r, w := 0, 0
	for {
		for r < n && isSpace(line[r]) {
			r++
		}
		if r >= n {
			return args, nil
		}
		if len(args) == MaxArgs {
			return nil, errTooManyArgs
		}
		start := w
		inDouble, inSingle := false, false
		for done := false; !done; {
			end := r >= n
			var c byte
			if !end {
				c = line[r]
			}
			switch {
			case inDouble:
				if end {
					return nil, errQuotes
				}
				if c == '\\' && r+3 < n && line[r+1] == 'x' {
					hi, ok1 := hexValue(line[r+2])
					lo, ok2 := hexValue(line[r+3])
					if ok1 && ok2 {
						line[w] = hi<<4 | lo
						w++
						r += 3
						break
					}
				}
				if c == '\\' && r+1 < n {
					r++
					switch c = line[r]; c {
					case 'n':
						c = '\n'
					case 'r':
						c = '\r'
					case 't':
						c = '\t'
					case 'b':
						c = '\b'
					case 'a':
						c = '\a'
					}
					line[w] = c
					w++
				} else if c == '"' {
					// The closing quote must be followed by a space or nothing.
					if r+1 < n && !isSpace(line[r+1]) {
						return nil, errQuotes
					}
					done = true
				} else {
					line[w] = c
					w++
				}
			case inSingle:
				if end {
					return nil, errQuotes
				}
				if c == '\\' && r+1 < n && line[r+1] == '\'' {
					r++
					line[w] = '\''
					w++
				} else if c == '\'' {
					if r+1 < n && !isSpace(line[r+1]) {
						return nil, errQuotes
					}
					done = true
				} else {
					line[w] = c
					w++
				}
			default:
				switch {
				case end || c == ' ' || c == '\n' || c == '\r' || c == '\t':
					done = true
				case c == '"':
					inDouble = true
				case c == '\'':
					inSingle = true
				default:
					line[w] = c
					w++
				}
			}
			if !end {
				r++
			}
		}
		args = append(args, line[start:w:w])
	}
}
