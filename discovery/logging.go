package discovery

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"unicode/utf8"
)

// memberlistLogger returns a *log.Logger for memberlist.Config.Logger that
// sends memberlist's lines ("[WARN] memberlist: ...") to l at their level.
func memberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(slogWriter{l}, "", 0)
}

// slogWriter turns memberlist's log lines into slog records.
type slogWriter struct {
	l *slog.Logger
}

// Write takes one line: log.Logger writes each message in one call. A
// message that spans lines (a peer's name can hold a newline) stays one
// record, which the handler escapes, instead of becoming a forged second one.
func (w slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	if strings.TrimSpace(line) == "" {
		return len(p), nil
	}
	level, msg := parseLogLine(line)
	msg = capLine(msg)
	if why := refusalHint(msg); why != "" {
		w.l.Log(context.Background(), level, "refused gossip from a node of another cluster or with another key",
			"why", why, "memberlist", msg)
		return len(p), nil
	}
	if strings.Contains(msg, errRefused.Error()) {
		// memberlist's line for each message of a node that admit
		// refused, which refuse has logged once already.
		level = slog.LevelDebug
	}
	w.l.Log(context.Background(), level, msg)
	return len(p), nil
}

// maxLogLine bounds a memberlist line. memberlist writes peers' names into
// its lines (e.g. "Refuting a suspect message (from: NAME)"), and a node
// that is refused for its 5,000-byte name can still send messages: valid
// names are at most 253 bytes, so anything past a few of them is the
// sender's, not information.
const maxLogLine = 1024

// capLine cuts msg to maxLogLine bytes (at a rune boundary) and says how
// much it dropped.
func capLine(msg string) string {
	if len(msg) <= maxLogLine {
		return msg
	}
	cut := maxLogLine
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d more bytes)", msg[:cut], len(msg)-cut)
}

// refusalHints explain memberlist's lines about a peer whose messages it
// cannot read (the node that tries to join says why on its side too: see
// explainJoinError), so that the cluster's logs say why a node cannot join.
var refusalHints = []struct{ match, why string }{
	{"no installed keys could decrypt", "its gossip key is not in this node's keyring: a wrong key, or a node that missed a key rotation"},
	{"remote state is not encrypted", "it does not encrypt gossip and this node does: start it with the cluster's key"},
	{"encryption is not configured", "it encrypts gossip and this node has no key"},
	{"unacceptable label", "its cluster label is not this node's"},
}

func refusalHint(msg string) string {
	lower := strings.ToLower(msg)
	for _, h := range refusalHints {
		if strings.Contains(lower, h.match) {
			return h.why
		}
	}
	return ""
}

// levelTags are the level tags memberlist (and hashicorp's log convention)
// write, longest first where one is a prefix of another.
var levelTags = []struct {
	tag   string
	level slog.Level
}{
	{"[TRACE]", slog.LevelDebug},
	{"[DEBUG]", slog.LevelDebug},
	{"[INFO]", slog.LevelInfo},
	{"[WARNING]", slog.LevelWarn},
	{"[WARN]", slog.LevelWarn},
	{"[ERROR]", slog.LevelError},
	{"[ERR]", slog.LevelError},
}

// parseLogLine finds the level tag in a line such as
// "2026/01/02 15:04:05 [DEBUG] memberlist: Stream connection from=..." and
// returns its level and what follows it. A line without a tag is Info.
func parseLogLine(line string) (slog.Level, string) {
	line = strings.TrimSpace(line)
	i := strings.IndexByte(line, '[')
	if i < 0 {
		return slog.LevelInfo, line
	}
	rest := line[i:]
	for _, t := range levelTags {
		if strings.HasPrefix(rest, t.tag) {
			return t.level, strings.TrimSpace(rest[len(t.tag):])
		}
	}
	return slog.LevelInfo, line
}
