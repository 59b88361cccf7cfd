package redisapi

import "github.com/tidwall/redcon"

// Reply encoders. The common ones are redcon's; these add what redcon lacks:
// errors built from client bytes without a string conversion, with line
// breaks turned into spaces so a reply can never break the stream (Redis
// does the same).

func appendError(b []byte, msg string) []byte {
	b = append(b, '-')
	b = appendSanitized(b, msg)
	return append(b, '\r', '\n')
}

func appendSanitized[T string | []byte](b []byte, s T) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	return b
}

var (
	replyOK   = []byte("+OK\r\n")
	replyPONG = []byte("+PONG\r\n")
	replyNil  = []byte("$-1\r\n")
)

func appendBulkString(b []byte, s string) []byte { return redcon.AppendBulkString(b, s) }
func appendBulk(b []byte, s []byte) []byte       { return redcon.AppendBulk(b, s) }
func appendArray(b []byte, n int) []byte         { return redcon.AppendArray(b, n) }
func appendInt(b []byte, n int64) []byte         { return redcon.AppendInt(b, n) }
func appendStatus(b []byte, s string) []byte     { return redcon.AppendString(b, s) }
