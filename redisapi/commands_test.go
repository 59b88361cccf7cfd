package redisapi

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Exact replies, checked against redis-server 7.0 where Redis has the command.
func TestCommandReplies(t *testing.T) {
	s := startServer(t, Config{DBs: map[int]string{1: "thumbs"}})
	web := func(key string) string { return bulk(owner(t, s.router, "web", key)) }
	long := strings.Repeat("z", 200)
	tests := []struct {
		name, req, want string
	}{
		{"GET", request("GET", "k"), web("k")},
		{"get mixed case", request("gEt", "k"), web("k")},
		{"GET inline", "GET k\r\n", web("k")},
		{"GET arity", request("GET", "a", "b"), "-ERR wrong number of arguments for 'get' command\r\n"},
		{"MGET", request("MGET", "a", "b"), "*2\r\n" + web("a") + web("b")},
		{"MGET arity", request("MGET"), "-ERR wrong number of arguments for 'mget' command\r\n"},
		{"PING", request("PING"), "+PONG\r\n"},
		{"PING msg", request("ping", "hi"), "$2\r\nhi\r\n"},
		{"PING arity", request("PING", "a", "b"), "-ERR wrong number of arguments for 'ping' command\r\n"},
		{"ECHO", request("ECHO", ""), "$0\r\n\r\n"},
		{"ECHO arity", request("ECHO"), "-ERR wrong number of arguments for 'echo' command\r\n"},
		{"SELECT", request("SELECT", "1") + request("GET", "k") + request("SELECT", "0") + request("GET", "k"),
			"+OK\r\n" + bulk("10.0.1.1:8080") + "+OK\r\n" + web("k")},
		{"SELECT unmapped", request("SELECT", "5"), "-ERR DB index is out of range\r\n"},
		{"SELECT negative", request("SELECT", "-1"), "-ERR DB index is out of range\r\n"},
		{"SELECT not a number", request("SELECT", "x"), "-ERR value is not an integer or out of range\r\n"},
		{"AUTH without a password set", request("AUTH", "x"), "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n"},
		{"AUTH default without a password set", request("AUTH", "default", "x"), "+OK\r\n"},
		{"AUTH other user", request("AUTH", "bob", "x"), "-WRONGPASS invalid username-password pair or user is disabled.\r\n"},
		{"HELLO 4", request("HELLO", "4"), "-NOPROTO unsupported protocol version\r\n"},
		{"HELLO 3", request("HELLO", "3"), "-NOPROTO sorry, this protocol version is not supported\r\n"},
		{"HELLO x", request("HELLO", "x"), "-ERR Protocol version is not an integer or out of range\r\n"},
		{"HELLO bad option", request("HELLO", "2", "FOO"), "-ERR Syntax error in HELLO option 'FOO'\r\n"},
		{"HELLO AUTH short", request("HELLO", "2", "AUTH", "a"), "-ERR Syntax error in HELLO option 'AUTH'\r\n"},
		{"HELLO bad name", request("HELLO", "2", "SETNAME", "a b"), "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"},
		{"CLIENT arity", request("CLIENT"), "-ERR wrong number of arguments for 'client' command\r\n"},
		{"CLIENT unknown", request("CLIENT", "Kill"), "-ERR unknown subcommand 'Kill'. Try CLIENT HELP.\r\n"},
		{"CLIENT SETNAME arity", request("CLIENT", "setname"), "-ERR wrong number of arguments for 'client|setname' command\r\n"},
		{"CLIENT names", request("CLIENT", "GETNAME") + request("CLIENT", "SETNAME", "n1") + request("CLIENT", "GETNAME") +
			request("CLIENT", "SETNAME", "") + request("CLIENT", "GETNAME"),
			"$-1\r\n+OK\r\n$2\r\nn1\r\n+OK\r\n$-1\r\n"},
		{"CLIENT SETNAME bad", request("CLIENT", "SETNAME", "a\nb"), "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"},
		{"CLIENT SETINFO", request("client", "setinfo", "LIB-NAME", "go-redis(,go1.26)") + request("client", "setinfo", "lib-ver", "9.23.0"), "+OK\r\n+OK\r\n"},
		{"CLIENT SETINFO unknown", request("CLIENT", "SETINFO", "color", "x"), "-ERR Unrecognized option 'color'\r\n"},
		{"CLIENT SETINFO bad value", request("CLIENT", "SETINFO", "Lib-Name", "a b"), "-ERR Lib-Name cannot contain spaces, newlines or special characters.\r\n"},
		{"COMMAND unknown", request("COMMAND", "FOO"), "-ERR unknown subcommand 'FOO'. Try COMMAND HELP.\r\n"},
		{"COMMAND COUNT arity", request("COMMAND", "COUNT", "x"), "-ERR wrong number of arguments for 'command|count' command\r\n"},
		{"COMMAND COUNT", request("COMMAND", "COUNT"), ":" + itoa(len(commandTable)) + "\r\n"},
		{"COMMAND INFO", request("COMMAND", "INFO", "GET", "nosuch"),
			"*2\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n*2\r\n+@read\r\n+@fast\r\n*0\r\n*0\r\n*0\r\n$-1\r\n"},
		{"COMMAND DOCS", request("COMMAND", "DOCS", "get"),
			"*2\r\n$3\r\nget\r\n*8\r\n$7\r\nsummary\r\n" + bulk(commandsBy["get"].summary) +
				"$5\r\nsince\r\n$5\r\n1.0.0\r\n$5\r\ngroup\r\n$7\r\nringman\r\n$9\r\narguments\r\n*1\r\n*4\r\n$4\r\nname\r\n$3\r\nkey\r\n$4\r\ntype\r\n$3\r\nkey\r\n"},
		{"INFO unknown section", request("INFO", "nosuch"), "$0\r\n\r\n"},
		{"RING.LOOKUP arity", request("RING.LOOKUP"), "-ERR wrong number of arguments for 'ring.lookup' command\r\n"},
		{"RING.LOOKUP too many", request("RING.LOOKUP", "k", "1", "web", "x"), "-ERR syntax error\r\n"},
		{"RING.LOOKUP count", request("RING.LOOKUP", "k", "x"), "-ERR count must be a whole number from 1 to 8, got 'x'\r\n"},
		{"RING.LOOKUP negative", request("RING.LOOKUP", "k", "-1"), "-ERR count must be a whole number from 1 to 8, got '-1'\r\n"},
		{"RING.LOOKUP default", request("RING.LOOKUP", "k"), "*1\r\n" + web("k")},
		{"RING.LOOKUP more than there are", request("RING.LOOKUP", "k", "8", "thumbs"), "*1\r\n" + bulk("10.0.1.1:8080")},
		{"RING.LOOKUP too many candidates", request("RING.LOOKUP", "k", "100", "thumbs"), "-ERR count must be a whole number from 1 to 8, got '100'\r\n"},
		{"RING.LOOKUP on db 1", request("SELECT", "1") + request("RING.LOOKUP", "k", "2"), "+OK\r\n*1\r\n" + bulk("10.0.1.1:8080")},
		{"RING.MEMBERS unknown", request("RING.MEMBERS", "nosuch"), "-NOSERVICE unknown service 'nosuch'\r\n"},
		{"RING.MEMBERS too many", request("RING.MEMBERS", "a", "b"), "-ERR syntax error\r\n"},
		{"unknown", request("SET", "k", "v"), "-ERR unknown command 'SET', with args beginning with: 'k' 'v' \r\n"},
		{"unknown, long args cut near 128 bytes", request("x", long, long),
			"-ERR unknown command 'x', with args beginning with: '" + long[:128] + "' \r\n"},
		{"unknown, line breaks kept out", request("x\r\ny", "a\nb"), "-ERR unknown command 'x  y', with args beginning with: 'a b' \r\n"},
		{"QUIT ends the pipeline", request("QUIT") + request("PING"), "+OK\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, s.Addr())
			exchange(t, c, tt.req, tt.want)
			if tt.name == "QUIT ends the pipeline" {
				if got := readUntilClosed(t, c, 5*time.Second); len(got) != 0 {
					t.Errorf("after QUIT: %q", got)
				}
			}
		})
	}
}

func TestHelpAndInfoSections(t *testing.T) {
	s := startServer(t, Config{Members: func() int { return 3 }})
	ctx := context.Background()
	c := goRedis(t, s.Addr(), redis.Options{})
	for _, container := range []string{"client", "command"} {
		lines, err := c.Do(ctx, container, "help").StringSlice()
		if err != nil || len(lines) < 4 || !strings.HasPrefix(lines[0], strings.ToUpper(container)+" <subcommand>") ||
			lines[len(lines)-1] != "    Print this help." {
			t.Errorf("%s HELP = %q, %v", container, lines, err)
		}
	}
	for _, tc := range []struct {
		sections   []string
		want, lack []string
	}{
		{nil, []string{"# Server", "# Clients", "# Stats", "# Ring", "members:3"}, nil},
		{[]string{"Ring"}, []string{"# Ring", "instances_web:3", "db0:service=web"}, []string{"# Server"}},
		{[]string{"server", "stats"}, []string{"# Server", "# Stats"}, []string{"# Ring", "# Clients"}},
		{[]string{"everything"}, []string{"# Server", "# Ring"}, nil},
	} {
		text, err := c.Info(ctx, tc.sections...).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(text, w) {
				t.Errorf("INFO %v lacks %q:\n%s", tc.sections, w, text)
			}
		}
		for _, l := range tc.lack {
			if strings.Contains(text, l) {
				t.Errorf("INFO %v has %q:\n%s", tc.sections, l, text)
			}
		}
		for _, line := range strings.Split(strings.TrimSuffix(text, "\r\n"), "\r\n") {
			if line != "" && !strings.HasPrefix(line, "# ") && !strings.Contains(line, ":") {
				t.Errorf("INFO %v: line %q is not key:value", tc.sections, line)
			}
		}
	}
}

// Every command (and subcommand) answers with exactly one well-formed reply,
// whatever its arguments: a miscounted array would desynchronise clients.
func TestEveryCommandRepliesOnce(t *testing.T) {
	s := newFuzzServer(t)
	argSets := [][]string{nil, {"k"}, {"1"}, {"2", "x"}, {"a", "b", "c"}}
	for _, cmd := range commandTable {
		var names [][]string
		if len(cmd.subs) == 0 {
			names = append(names, []string{cmd.name})
		}
		for _, sub := range cmd.subs {
			names = append(names, strings.Split(sub.name, "|"))
		}
		for _, name := range names {
			for _, extra := range argSets {
				if name[0] == "quit" {
					continue
				}
				args := append(append([]string(nil), name...), extra...)
				out := serveBytes(t, s, []byte(request(args...)+request(args...)), 1<<20)
				n, err := checkReplies(out)
				if err != nil || n != 2 {
					t.Errorf("%q twice: %d replies, %v: %q", args, n, err, out)
				}
			}
		}
	}
}
