package redisapi

import (
	"os"
	"slices"
	"strconv"
	"time"
)

// INFO sections, in the order INFO with no argument prints them.
var infoSections = []struct {
	name  string
	write func(s *Server, b []byte) []byte
}{
	{"server", (*Server).infoServer},
	{"clients", (*Server).infoClients},
	{"stats", (*Server).infoStats},
	{"ring", (*Server).infoRing},
}

// cmdInfo answers INFO [section ...] with Redis-style "key:value" lines
// under "# Section" headings. "all", "everything" and "default" select every
// section; unknown sections are left out, as Redis does.
func (c *conn) cmdInfo(args [][]byte) {
	want := make([]bool, len(infoSections))
	if len(args) == 1 {
		for i := range want {
			want[i] = true
		}
	}
	for _, arg := range args[1:] {
		if equalFold(arg, "all") || equalFold(arg, "everything") || equalFold(arg, "default") {
			for i := range want {
				want[i] = true
			}
		}
		for i, sec := range infoSections {
			if equalFold(arg, sec.name) {
				want[i] = true
			}
		}
	}
	var text []byte
	for i, sec := range infoSections {
		if !want[i] {
			continue
		}
		if len(text) > 0 {
			text = append(text, "\r\n"...)
		}
		text = sec.write(c.s, text)
	}
	c.out = appendBulk(c.out, text)
}

func infoLine(b []byte, key, value string) []byte {
	b = appendSanitized(b, key)
	b = append(b, ':')
	b = appendSanitized(b, value)
	return append(b, '\r', '\n')
}

func infoInt(b []byte, key string, value int64) []byte {
	b = appendSanitized(b, key)
	b = append(b, ':')
	b = strconv.AppendInt(b, value, 10)
	return append(b, '\r', '\n')
}

func (s *Server) infoServer(b []byte) []byte {
	uptime := time.Since(s.started)
	b = append(b, "# Server\r\n"...)
	b = infoLine(b, "ringman_version", s.version)
	b = infoLine(b, "redis_mode", "standalone")
	b = infoInt(b, "process_id", int64(os.Getpid()))
	b = infoLine(b, "listener", s.addr)
	b = infoInt(b, "uptime_in_seconds", int64(uptime/time.Second))
	b = infoInt(b, "uptime_in_days", int64(uptime/(24*time.Hour)))
	return b
}

func (s *Server) infoClients(b []byte) []byte {
	b = append(b, "# Clients\r\n"...)
	b = infoInt(b, "connected_clients", int64(s.connectedClients()))
	return infoInt(b, "maxclients", int64(s.maxClients))
}

func (s *Server) infoStats(b []byte) []byte {
	b = append(b, "# Stats\r\n"...)
	b = infoInt(b, "total_connections_received", int64(s.accepted.Load()))
	b = infoInt(b, "rejected_connections", int64(s.closes[closeMaxClients].Load()))
	b = infoInt(b, "lookups_served", int64(s.Lookups()))
	return b
}

func (s *Server) infoRing(b []byte) []byte {
	b = append(b, "# Ring\r\n"...)
	if s.members != nil {
		b = infoInt(b, "members", int64(s.members()))
	}
	b = infoLine(b, "default_service", s.router.DefaultService())
	rings := s.router.Rings()
	services := make([]string, 0, len(rings))
	for service := range rings {
		services = append(services, service)
	}
	for _, service := range s.dbs {
		if _, ok := rings[service]; !ok {
			services = append(services, service)
		}
	}
	slices.Sort(services)
	services = slices.Compact(services)
	b = infoInt(b, "services", int64(len(services)))
	for _, service := range services {
		b = infoInt(b, "instances_"+service, int64(rings[service].Len()))
	}
	dbs := make([]int, 0, len(s.dbs))
	for db := range s.dbs {
		dbs = append(dbs, db)
	}
	slices.Sort(dbs)
	for _, db := range dbs {
		b = infoLine(b, "db"+strconv.Itoa(db), "service="+s.dbs[db])
	}
	return b
}

// --- COMMAND ---

func (c *conn) cmdCommand(args [][]byte) {
	if len(args) == 1 {
		c.out = appendArray(c.out, len(commandTable))
		for _, cmd := range commandTable {
			c.out = appendCommandInfo(c.out, cmd)
		}
		return
	}
	c.runSubcommand(commandsBy["command"], args)
}

func (c *conn) cmdCommandCount(args [][]byte) {
	c.out = appendInt(c.out, int64(len(commandTable)))
}

func (c *conn) cmdCommandList(args [][]byte) {
	c.out = appendArray(c.out, len(commandTable))
	for _, cmd := range commandTable {
		c.out = appendBulkString(c.out, cmd.name)
	}
}

func (c *conn) cmdCommandInfo(args [][]byte) {
	names := args[2:]
	if len(names) == 0 {
		c.cmdCommand(args[:1])
		return
	}
	c.out = appendArray(c.out, len(names))
	for _, name := range names {
		if cmd := findCommand(commandsBy, name); cmd != nil {
			c.out = appendCommandInfo(c.out, cmd)
		} else {
			c.out = append(c.out, replyNil...)
		}
	}
}

// appendCommandInfo writes Redis 7's ten-element COMMAND entry: name, arity,
// flags, first key, last key, key step, ACL categories, tips, key specs,
// subcommands. go-redis insists on 6, 7 or 10 elements.
func appendCommandInfo(b []byte, cmd *command) []byte {
	b = appendArray(b, 10)
	b = appendBulkString(b, cmd.name)
	b = appendInt(b, int64(cmd.arity))
	b = appendArray(b, len(cmd.flags))
	for _, f := range cmd.flags {
		b = appendStatus(b, f)
	}
	b = appendInt(b, int64(cmd.firstKey))
	b = appendInt(b, int64(cmd.lastKey))
	b = appendInt(b, int64(cmd.keyStep))
	b = appendArray(b, len(cmd.acl))
	for _, a := range cmd.acl {
		b = appendStatus(b, a)
	}
	b = appendArray(b, 0) // tips
	b = appendArray(b, 0) // key specs
	b = appendArray(b, len(cmd.subs))
	for _, sub := range cmd.subs {
		b = appendCommandInfo(b, sub)
	}
	return b
}

func (c *conn) cmdCommandDocs(args [][]byte) {
	var list []*command
	if len(args) == 2 {
		list = commandTable
	} else {
		for _, name := range args[2:] {
			if cmd := findCommand(commandsBy, name); cmd != nil {
				list = append(list, cmd)
			}
		}
	}
	c.out = appendArray(c.out, 2*len(list))
	for _, cmd := range list {
		c.out = appendBulkString(c.out, cmd.name)
		c.out = appendCommandDocs(c.out, cmd)
	}
}

// appendCommandDocs writes a COMMAND DOCS entry as redis-cli reads it: a map
// (as an array, RESP2) of summary, since, group, arguments and subcommands.
// Each argument has a name and a type; flags are status replies.
func appendCommandDocs(b []byte, cmd *command) []byte {
	n := 6
	if len(cmd.args) > 0 {
		n += 2
	}
	if len(cmd.subs) > 0 {
		n += 2
	}
	b = appendArray(b, n)
	b = appendBulkString(b, "summary")
	b = appendBulkString(b, cmd.summary)
	b = appendBulkString(b, "since")
	b = appendBulkString(b, cmd.since)
	b = appendBulkString(b, "group")
	b = appendBulkString(b, cmd.group)
	if len(cmd.args) > 0 {
		b = appendBulkString(b, "arguments")
		b = appendArray(b, len(cmd.args))
		for _, a := range cmd.args {
			var flags []string
			if a.optional {
				flags = append(flags, "optional")
			}
			if a.multiple {
				flags = append(flags, "multiple")
			}
			m := 4
			if len(flags) > 0 {
				m += 2
			}
			b = appendArray(b, m)
			b = appendBulkString(b, "name")
			b = appendBulkString(b, a.name)
			b = appendBulkString(b, "type")
			b = appendBulkString(b, a.typ)
			if len(flags) > 0 {
				b = appendBulkString(b, "flags")
				b = appendArray(b, len(flags))
				for _, f := range flags {
					b = appendStatus(b, f)
				}
			}
		}
	}
	if len(cmd.subs) > 0 {
		b = appendBulkString(b, "subcommands")
		b = appendArray(b, 2*len(cmd.subs))
		for _, sub := range cmd.subs {
			b = appendBulkString(b, sub.name)
			b = appendCommandDocs(b, sub)
		}
	}
	return b
}

func (c *conn) cmdCommandHelp(args [][]byte) {
	c.appendHelp("COMMAND",
		"(no subcommand)", "    Return details about all commands.",
		"COUNT", "    Return the total number of commands.",
		"DOCS [<command-name> ...]", "    Return documentary information about commands.",
		"INFO [<command-name> ...]", "    Return details about the given commands, or all of them.",
		"LIST", "    Return the names of all commands.")
}
