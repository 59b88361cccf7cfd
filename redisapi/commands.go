package redisapi

import (
	"crypto/sha256"
	"crypto/subtle"

	"ringman/router"
)

// command describes one command: how to run it, and what COMMAND and
// COMMAND DOCS say about it (redis-cli builds its hints from the docs).
type command struct {
	name  string // lower case; "container|sub" for subcommands
	arity int    // Redis's convention: n exactly n arguments, -n at least n
	// noAuth commands run before AUTH when a password is required.
	noAuth bool
	// lookup commands count their errors as lookup errors (Stats).
	lookup bool
	run    func(c *conn, args [][]byte)

	flags             []string
	firstKey, lastKey int
	keyStep           int
	acl               []string

	summary string
	since   string
	group   string
	args    []argDoc
	subs    []*command
	subsBy  map[string]*command
}

type argDoc struct {
	name     string
	typ      string // "key", "string", "integer"
	optional bool
	multiple bool
}

// commandTable is every command, in the order COMMAND lists them. It is
// filled in init because the COMMAND handler refers to it.
var (
	commandTable []*command
	commandsBy   map[string]*command
)

func init() {
	key := argDoc{name: "key", typ: "key"}
	commandTable = []*command{
		{name: "get", arity: 2, lookup: true, run: (*conn).cmdGet,
			flags: []string{"readonly", "fast"}, firstKey: 1, lastKey: 1, keyStep: 1, acl: []string{"@read", "@fast"},
			summary: "Returns the instance (host:port) that serves the key, or nil.",
			since:   "1.0.0", group: "ringman", args: []argDoc{key}},
		{name: "mget", arity: -2, lookup: true, run: (*conn).cmdMGet,
			flags: []string{"readonly", "fast"}, firstKey: 1, lastKey: -1, keyStep: 1, acl: []string{"@read", "@fast"},
			summary: "Returns the instance that serves each key.",
			since:   "1.0.0", group: "ringman", args: []argDoc{{name: "key", typ: "key", multiple: true}}},
		{name: "ring.lookup", arity: -2, lookup: true, run: (*conn).cmdRingLookup,
			flags: []string{"readonly", "fast"}, firstKey: 1, lastKey: 1, keyStep: 1, acl: []string{"@read", "@fast"},
			summary: "Returns up to count (1 to 8, default 1) instances for the key in preference order, owner first.",
			since:   "1.0.0", group: "ringman", args: []argDoc{key,
				{name: "count", typ: "integer", optional: true}, {name: "service", typ: "string", optional: true}}},
		{name: "ring.members", arity: -1, run: (*conn).cmdRingMembers,
			flags: []string{"readonly"}, acl: []string{"@read"},
			summary: "Returns the live instances of the service.",
			since:   "1.0.0", group: "ringman", args: []argDoc{{name: "service", typ: "string", optional: true}}},
		{name: "ring.table", arity: -1, run: (*conn).cmdRingTable,
			flags: []string{"readonly"}, acl: []string{"@read"},
			summary: "Returns the service's whole placement and overrides (nil when the epoch given is current), for routers that answer lookups themselves.",
			since:   "1.0.0", group: "ringman", args: []argDoc{{name: "service", typ: "string", optional: true},
				{name: "epoch", typ: "string", optional: true}}},
		{name: "select", arity: 2, run: (*conn).cmdSelect,
			flags: []string{"loading", "stale", "fast"}, acl: []string{"@keyspace", "@fast"},
			summary: "Selects the service of db index for the following lookups.",
			since:   "1.0.0", group: "connection", args: []argDoc{{name: "index", typ: "integer"}}},
		{name: "ping", arity: -1, run: (*conn).cmdPing,
			flags: []string{"fast"}, acl: []string{"@fast", "@connection"},
			summary: "Returns PONG, or the message.",
			since:   "1.0.0", group: "connection", args: []argDoc{{name: "message", typ: "string", optional: true}}},
		{name: "echo", arity: 2, run: (*conn).cmdEcho,
			flags: []string{"fast"}, acl: []string{"@fast", "@connection"},
			summary: "Returns the message.",
			since:   "1.0.0", group: "connection", args: []argDoc{{name: "message", typ: "string"}}},
		{name: "quit", arity: -1, noAuth: true, run: (*conn).cmdQuit,
			flags: []string{"noauth", "fast"}, acl: []string{"@fast", "@connection"},
			summary: "Closes the connection.", since: "1.0.0", group: "connection"},
		{name: "auth", arity: -2, noAuth: true, run: (*conn).cmdAuth,
			flags: []string{"noauth", "fast"}, acl: []string{"@fast", "@connection"},
			summary: "Authenticates the connection.", since: "1.0.0", group: "connection",
			args: []argDoc{{name: "username", typ: "string", optional: true}, {name: "password", typ: "string"}}},
		{name: "hello", arity: -1, noAuth: true, run: (*conn).cmdHello,
			flags: []string{"noauth", "fast"}, acl: []string{"@fast", "@connection"},
			summary: "Handshakes (RESP2 only), optionally authenticating and naming the connection.",
			since:   "1.0.0", group: "connection", args: []argDoc{{name: "protover", typ: "integer", optional: true},
				{name: "AUTH username password", typ: "string", optional: true},
				{name: "SETNAME clientname", typ: "string", optional: true}}},
		{name: "info", arity: -1, run: (*conn).cmdInfo,
			flags: []string{"loading", "stale"}, acl: []string{"@slow", "@dangerous"},
			summary: "Returns information and statistics about the server.",
			since:   "1.0.0", group: "server", args: []argDoc{{name: "section", typ: "string", optional: true, multiple: true}}},
		{name: "command", arity: -1, run: (*conn).cmdCommand,
			flags: []string{"loading", "stale"}, acl: []string{"@slow", "@connection"},
			summary: "Returns details about the commands.", since: "1.0.0", group: "server",
			subs: []*command{
				{name: "command|count", arity: 2, run: (*conn).cmdCommandCount,
					summary: "Returns the number of commands.", since: "1.0.0", group: "server"},
				{name: "command|docs", arity: -2, run: (*conn).cmdCommandDocs,
					summary: "Returns documentary information about commands.", since: "1.0.0", group: "server",
					args: []argDoc{{name: "command-name", typ: "string", optional: true, multiple: true}}},
				{name: "command|info", arity: -2, run: (*conn).cmdCommandInfo,
					summary: "Returns information about commands.", since: "1.0.0", group: "server",
					args: []argDoc{{name: "command-name", typ: "string", optional: true, multiple: true}}},
				{name: "command|list", arity: 2, run: (*conn).cmdCommandList,
					summary: "Returns a list of command names.", since: "1.0.0", group: "server"},
				{name: "command|help", arity: 2, run: (*conn).cmdCommandHelp,
					summary: "Returns helpful text about the subcommands.", since: "1.0.0", group: "server"},
			}},
		{name: "client", arity: -2, run: (*conn).cmdClient,
			flags: []string{"loading", "stale"}, acl: []string{"@slow", "@connection"},
			summary: "A container for client connection commands.", since: "1.0.0", group: "connection",
			subs: []*command{
				{name: "client|id", arity: 2, run: (*conn).cmdClientID,
					summary: "Returns the connection's unique ID.", since: "1.0.0", group: "connection"},
				{name: "client|getname", arity: 2, run: (*conn).cmdClientGetName,
					summary: "Returns the connection's name.", since: "1.0.0", group: "connection"},
				{name: "client|setname", arity: 3, run: (*conn).cmdClientSetName,
					summary: "Sets the connection's name.", since: "1.0.0", group: "connection",
					args: []argDoc{{name: "connection-name", typ: "string"}}},
				{name: "client|setinfo", arity: 4, run: (*conn).cmdClientSetInfo,
					summary: "Accepts the client library's name and version (and ignores them).",
					since:   "1.0.0", group: "connection",
					args: []argDoc{{name: "attr", typ: "string"}, {name: "value", typ: "string"}}},
				{name: "client|help", arity: 2, run: (*conn).cmdClientHelp,
					summary: "Returns helpful text about the subcommands.", since: "1.0.0", group: "connection"},
			}},
	}
	commandsBy = map[string]*command{}
	for _, cmd := range commandTable {
		commandsBy[cmd.name] = cmd
		if len(cmd.subs) > 0 {
			cmd.subsBy = map[string]*command{}
			for _, sub := range cmd.subs {
				sub.flags, sub.acl = cmd.flags, cmd.acl
				cmd.subsBy[sub.name[len(cmd.name)+1:]] = sub
			}
		}
	}
}

// maxCommandName bounds the names worth looking up: longer ones are unknown.
const maxCommandName = 16

// findCommand looks a command name up case-insensitively without
// allocating: the lower-cased copy lives on the stack, and a map index with
// string(bytes) does not copy.
func findCommand(table map[string]*command, name []byte) *command {
	if len(name) > maxCommandName {
		return nil
	}
	var lower [maxCommandName]byte
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	return table[string(lower[:len(name)])]
}

func arityOK(arity, n int) bool {
	if arity >= 0 {
		return n == arity
	}
	return n >= -arity
}

var replyInternalError = []byte("-ERR internal error\r\n")

// exec runs one command and appends its reply to c.out. A panic in a command
// becomes "-ERR internal error" for that command alone.
func (c *conn) exec(args [][]byte) {
	mark := len(c.out)
	defer func() {
		if p := recover(); p != nil {
			c.out = append(c.out[:mark], replyInternalError...)
			if cmd := findCommand(commandsBy, args[0]); cmd != nil && cmd.lookup {
				c.counters.errors.Add(1)
			}
			c.s.recovered(p, "command")
		}
	}()
	// The lookup path first, without a table lookup.
	if name := args[0]; len(args) == 2 && len(name) == 3 && c.authed &&
		name[0]|0x20 == 'g' && name[1]|0x20 == 'e' && name[2]|0x20 == 't' {
		c.cmdGet(args)
		return
	}
	cmd := findCommand(commandsBy, args[0])
	if cmd == nil {
		c.unknownCommand(args)
		return
	}
	if !arityOK(cmd.arity, len(args)) {
		c.lookupError(cmd)
		c.wrongArity(cmd.name)
		return
	}
	if !c.authed && !cmd.noAuth {
		c.lookupError(cmd)
		c.out = append(c.out, "-NOAUTH Authentication required.\r\n"...)
		return
	}
	cmd.run(c, args)
}

// lookupError counts an error answer to cmd when it is a lookup command.
func (c *conn) lookupError(cmd *command) {
	if cmd.lookup {
		c.counters.errors.Add(1)
	}
}

// unknownCommand answers like Redis 7: the name as sent and the first
// arguments, up to about 128 bytes of them.
func (c *conn) unknownCommand(args [][]byte) {
	b := append(c.out, "-ERR unknown command '"...)
	b = appendSanitized(b, truncate(args[0], 128))
	b = append(b, "', with args beginning with: "...)
	written := 0
	for _, arg := range args[1:] {
		if written >= 128 {
			break
		}
		arg = truncate(arg, 128-written)
		b = append(b, '\'')
		b = appendSanitized(b, arg)
		b = append(b, '\'', ' ')
		written += len(arg) + 3
	}
	c.out = append(b, '\r', '\n')
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

func (c *conn) wrongArity(name string) {
	c.out = append(c.out, "-ERR wrong number of arguments for '"...)
	c.out = append(c.out, name...)
	c.out = append(c.out, "' command\r\n"...)
}

func (c *conn) errorReply(msg string) { c.out = appendError(c.out, msg) }

// runSubcommand dispatches CLIENT and COMMAND subcommands with Redis's errors.
func (c *conn) runSubcommand(container *command, args [][]byte) {
	sub := findCommand(container.subsBy, args[1])
	if sub == nil {
		b := append(c.out, "-ERR unknown subcommand '"...)
		b = appendSanitized(b, truncate(args[1], 128))
		b = append(b, "'. Try "...)
		b = appendUpper(b, container.name)
		c.out = append(b, " HELP.\r\n"...)
		return
	}
	if !arityOK(sub.arity, len(args)) {
		c.wrongArity(sub.name)
		return
	}
	sub.run(c, args)
}

func appendUpper(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if 'a' <= ch && ch <= 'z' {
			ch -= 'a' - 'A'
		}
		b = append(b, ch)
	}
	return b
}

// --- lookups ---

func (c *conn) cmdGet(args [][]byte) {
	backend, src := c.s.router.Lookup(c.service, args[1])
	c.counters.lookups[src].Add(1)
	if backend == "" {
		c.out = append(c.out, replyNil...)
		return
	}
	c.out = appendBulkString(c.out, backend)
}

func (c *conn) cmdMGet(args [][]byte) {
	keys := args[1:]
	c.out = appendArray(c.out, len(keys))
	var counts [router.NumSources]uint64 // by router.Source
	for _, key := range keys {
		backend, src := c.s.router.Lookup(c.service, key)
		counts[src]++
		if backend == "" {
			c.out = append(c.out, replyNil...)
		} else {
			c.out = appendBulkString(c.out, backend)
		}
	}
	for src, n := range counts {
		if n > 0 {
			c.counters.lookups[src].Add(n)
		}
	}
}

func (c *conn) cmdRingLookup(args [][]byte) {
	if len(args) > 4 {
		c.counters.errors.Add(1)
		c.errorReply("ERR syntax error")
		return
	}
	n := 1
	if len(args) > 2 {
		v, ok := router.ParseCandidates(args[2])
		if !ok {
			c.counters.errors.Add(1)
			b := append(c.out, "-ERR count must be "...)
			b = append(b, router.CandidatesRule...)
			b = append(b, ", got '"...)
			b = appendSanitized(b, truncate(args[2], 32))
			c.out = append(b, "'\r\n"...)
			return
		}
		n = v
	}
	service := c.service
	if len(args) > 3 {
		// The selected db's service is known (Listen made it so); a named
		// one may not be.
		if !c.s.router.Known(string(args[3])) {
			c.counters.errors.Add(1)
			c.unknownService(args[3])
			return
		}
		service = string(args[3])
	}
	candidates, src := c.s.router.Candidates(service, args[1], n)
	c.counters.lookups[src].Add(1)
	c.out = appendArray(c.out, len(candidates))
	for _, cand := range candidates {
		c.out = appendBulkString(c.out, cand)
	}
}

// unknownService answers a command naming a service the router does not
// know (router.Known) with an error of its own prefix, so that a client can
// tell it from an empty answer (a known service with no live instance).
func (c *conn) unknownService(name []byte) {
	b := append(c.out, "-NOSERVICE unknown service '"...)
	b = appendSanitized(b, truncate(name, 128))
	c.out = append(b, "'\r\n"...)
}

func (c *conn) cmdRingMembers(args [][]byte) {
	if len(args) > 2 {
		c.errorReply("ERR syntax error")
		return
	}
	service := c.service
	if len(args) > 1 {
		if !c.s.router.Known(string(args[1])) {
			c.unknownService(args[1])
			return
		}
		service = string(args[1])
	}
	instances := c.s.router.Ring(service).Instances()
	c.out = appendArray(c.out, len(instances))
	for _, inst := range instances {
		c.out = appendBulkString(c.out, inst)
	}
}

// --- connection ---

func (c *conn) cmdSelect(args [][]byte) {
	db, ok := parseInt(args[1])
	if !ok || db != int64(int(db)) {
		c.errorReply("ERR value is not an integer or out of range")
		return
	}
	service, mapped := c.s.dbs[int(db)]
	if !mapped {
		c.errorReply("ERR DB index is out of range")
		return
	}
	c.db, c.service = int(db), service
	c.out = append(c.out, replyOK...)
}

func (c *conn) cmdPing(args [][]byte) {
	switch len(args) {
	case 1:
		c.out = append(c.out, replyPONG...)
	case 2:
		c.out = appendBulk(c.out, args[1])
	default:
		c.wrongArity("ping")
	}
}

func (c *conn) cmdEcho(args [][]byte) { c.out = appendBulk(c.out, args[1]) }

func (c *conn) cmdQuit(args [][]byte) {
	c.out = append(c.out, replyOK...)
	c.quit = true
}

func (c *conn) cmdAuth(args [][]byte) {
	if len(args) > 3 {
		c.errorReply("ERR syntax error")
		return
	}
	var user, pass []byte
	if len(args) == 2 {
		pass = args[1]
		if c.s.requirePass == "" {
			c.errorReply("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
			return
		}
	} else {
		user, pass = args[1], args[2]
	}
	if !c.checkPassword(user, pass) {
		c.s.authFailed(c)
		c.errorReply("WRONGPASS invalid username-password pair or user is disabled.")
		return
	}
	c.authed = true
	c.out = append(c.out, replyOK...)
}

// checkPassword accepts the only user there is, "default" (user == nil
// means AUTH <password>). Without a password configured, "default" takes any
// password, as in Redis.
func (c *conn) checkPassword(user, pass []byte) bool {
	if user != nil && string(user) != "default" {
		return false
	}
	if c.s.requirePass == "" {
		return true
	}
	// Digests, so that not even the password's length shows in the time
	// the comparison takes (ConstantTimeCompare returns early on lengths).
	got := sha256.Sum256(pass)
	return subtle.ConstantTimeCompare(got[:], c.s.passDigest[:]) == 1
}

func (c *conn) cmdHello(args [][]byte) {
	if len(args) >= 2 {
		ver, ok := parseInt(args[1])
		if !ok {
			c.errorReply("ERR Protocol version is not an integer or out of range")
			return
		}
		switch ver {
		case 2:
		case 3:
			c.errorReply("NOPROTO sorry, this protocol version is not supported")
			return
		default:
			c.errorReply("NOPROTO unsupported protocol version")
			return
		}
	}
	var user, pass, name []byte
	for i := 2; i < len(args); i++ {
		more := len(args) - 1 - i
		switch opt := args[i]; {
		case equalFold(opt, "auth") && more >= 2:
			user, pass = args[i+1], args[i+2]
			i += 2
		case equalFold(opt, "setname") && more >= 1:
			name = args[i+1]
			if !validName(name) {
				c.errorReply("ERR Client names cannot contain spaces, newlines or special characters.")
				return
			}
			i++
		default:
			b := append(c.out, "-ERR Syntax error in HELLO option '"...)
			b = appendSanitized(b, truncate(opt, 128))
			c.out = append(b, "'\r\n"...)
			return
		}
	}
	if user != nil {
		if !c.checkPassword(user, pass) {
			c.s.authFailed(c)
			c.errorReply("WRONGPASS invalid username-password pair or user is disabled.")
			return
		}
		c.authed = true
	}
	if !c.authed {
		c.errorReply("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
		return
	}
	if name != nil {
		c.name = string(name)
	}
	// RESP2 has no maps: a map is an array of alternating keys and values.
	b := appendArray(c.out, 14)
	b = appendBulkString(b, "server")
	b = appendBulkString(b, "ringman")
	b = appendBulkString(b, "version")
	b = appendBulkString(b, c.s.version)
	b = appendBulkString(b, "proto")
	b = appendInt(b, 2)
	b = appendBulkString(b, "id")
	b = appendInt(b, int64(c.id))
	b = appendBulkString(b, "mode")
	b = appendBulkString(b, "standalone")
	b = appendBulkString(b, "role")
	b = appendBulkString(b, "master")
	b = appendBulkString(b, "modules")
	c.out = appendArray(b, 0)
}

func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, ch := range b {
		if 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		if ch != lower[i] {
			return false
		}
	}
	return true
}

// validName is Redis's rule for client names: printable ASCII, no spaces.
func validName(name []byte) bool {
	for _, ch := range name {
		if ch < '!' || ch > '~' {
			return false
		}
	}
	return true
}

func (c *conn) cmdClient(args [][]byte) { c.runSubcommand(commandsBy["client"], args) }

func (c *conn) cmdClientID(args [][]byte) { c.out = appendInt(c.out, int64(c.id)) }

func (c *conn) cmdClientGetName(args [][]byte) {
	if c.name == "" {
		c.out = append(c.out, replyNil...)
		return
	}
	c.out = appendBulkString(c.out, c.name)
}

func (c *conn) cmdClientSetName(args [][]byte) {
	if !validName(args[2]) {
		c.errorReply("ERR Client names cannot contain spaces, newlines or special characters.")
		return
	}
	c.name = string(args[2])
	c.out = append(c.out, replyOK...)
}

func (c *conn) cmdClientSetInfo(args [][]byte) {
	attr := args[2]
	if !equalFold(attr, "lib-name") && !equalFold(attr, "lib-ver") {
		b := append(c.out, "-ERR Unrecognized option '"...)
		b = appendSanitized(b, truncate(attr, 128))
		c.out = append(b, "'\r\n"...)
		return
	}
	if !validName(args[3]) {
		b := appendSanitized(append(c.out, "-ERR "...), truncate(attr, 128))
		c.out = append(b, " cannot contain spaces, newlines or special characters.\r\n"...)
		return
	}
	c.out = append(c.out, replyOK...)
}

func (c *conn) cmdClientHelp(args [][]byte) {
	c.appendHelp("CLIENT",
		"GETNAME", "    Return the name of the current connection.",
		"ID", "    Return the ID of the current connection.",
		"SETNAME <connection-name>", "    Assign the name <connection-name> to the current connection.",
		"SETINFO <LIB-NAME|LIB-VER> <value>", "    Accepted for client libraries; ignored.")
}

func (c *conn) appendHelp(container string, lines ...string) {
	c.out = appendArray(c.out, 1+len(lines)+2)
	c.out = appendStatus(c.out, container+" <subcommand> [<arg> [value] [opt] ...]. Subcommands are:")
	for _, line := range lines {
		c.out = appendStatus(c.out, line)
	}
	c.out = appendStatus(c.out, "HELP")
	c.out = appendStatus(c.out, "    Print this help.")
}
