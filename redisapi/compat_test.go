package redisapi

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The exact bytes nginx-side clients send, in the writes they send them in.

// lua-resty-redis: RESP arrays, lowercase command names, no SELECT, one
// request per write on a pooled (keepalive) connection.
func TestLuaRestyRedis(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s.Addr())
	for _, key := range []string{"example.com/a", "/b?c=d", "x"} {
		req := "*2\r\n$3\r\nget\r\n$" + itoa(len(key)) + "\r\n" + key + "\r\n"
		exchange(t, c, req, bulk(owner(t, s.router, "web", key)))
	}
	// Its set_keepalive reuses the connection; a later lookup still works.
	exchange(t, c, request("get", "later"), bulk(owner(t, s.router, "web", "later")))
}

// ngx_http_redis up to 0.3.8: inline commands, "select 0" and "get" in one
// write, expecting "+OK" and then a bulk reply.
func TestNgxHTTPRedisInline(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s.Addr())
	exchange(t, c, "select 0\r\nget /some/key\r\n", "+OK\r\n"+bulk(owner(t, s.router, "web", "/some/key")))

	// With no instance the module wants "$-1" (it turns that into a 404).
	s2 := startServer(t, Config{DBs: map[int]string{0: "empty"}})
	c2 := dial(t, s2.Addr())
	exchange(t, c2, "select 0\r\nget /some/key\r\n", "+OK\r\n$-1\r\n")
}

// ngx_http_redis 0.3.9 and later: RESP arrays; AUTH when redis_auth is set,
// then SELECT, then GET, all in one write. Keys are percent-escaped by the
// module; to us they are just bytes.
func TestNgxHTTPRedisRESP(t *testing.T) {
	s := startServer(t, Config{RequirePass: "pw", DBs: map[int]string{3: "thumbs"}})
	key := url.PathEscape("/path x/ü") // "%2Fpath%20x%2F%C3%BC"-style
	c := dial(t, s.Addr())
	exchange(t, c, request("auth", "pw")+request("select", "0")+request("get", key),
		"+OK\r\n+OK\r\n"+bulk(owner(t, s.router, "web", key)))
	c2 := dial(t, s.Addr())
	exchange(t, c2, request("auth", "pw")+request("select", "3")+request("get", key),
		"+OK\r\n+OK\r\n"+bulk("10.0.1.1:8080"))

	// Without redis_auth the module sends no AUTH: SELECT gets NOAUTH.
	c3 := dial(t, s.Addr())
	exchange(t, c3, request("select", "0")+request("get", key),
		"-NOAUTH Authentication required.\r\n-NOAUTH Authentication required.\r\n")
}

func redisCLI(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("redis-cli")
	if err != nil {
		if _, err := os.Stat("/usr/bin/redis-cli"); err == nil {
			return "/usr/bin/redis-cli"
		}
		t.Skip("redis-cli not installed (apt-get install redis-tools; the Makefile installs it): skipping the redis-cli tests")
	}
	return path
}

func TestRedisCLI(t *testing.T) {
	cli := redisCLI(t)
	sock := filepath.Join(t.TempDir(), "r.sock")
	for _, tc := range []struct {
		name string
		addr string
	}{{"tcp", "127.0.0.1:0"}, {"unix", "unix:" + sock}} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, Config{Addr: tc.addr, RequirePass: "pw"})
			var target []string
			if path, ok := strings.CutPrefix(s.Addr(), "unix:"); ok {
				target = []string{"-s", path}
			} else {
				host, port, _ := strings.Cut(s.Addr(), ":")
				target = []string{"-h", host, "-p", port}
			}
			run := func(args ...string) string {
				t.Helper()
				cmd := exec.Command(cli, append(append(target, "--no-auth-warning", "-a", "pw"), args...)...)
				cmd.WaitDelay = 5 * time.Second
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
				}
				return string(out)
			}
			if got, want := run("GET", "/some/key"), owner(t, s.router, "web", "/some/key")+"\n"; got != want {
				t.Errorf("redis-cli GET = %q, want %q", got, want)
			}
			if got := run("INFO"); !strings.Contains(got, "ringman_version:1.2.3-test") || !strings.Contains(got, "lookups_served:1") {
				t.Errorf("redis-cli INFO:\n%s", got)
			}
			if got := run("INFO", "server"); strings.Contains(got, "# Stats") || !strings.Contains(got, "# Server") {
				t.Errorf("redis-cli INFO server:\n%s", got)
			}
			if got := run("-n", "0", "RING.LOOKUP", "k", "2"); len(strings.Fields(got)) != 2 {
				t.Errorf("redis-cli RING.LOOKUP k 2 = %q", got)
			}
			// What redis-cli fetches in interactive mode for its hints; the
			// reply must be well formed for it to print.
			if got := run("COMMAND", "DOCS"); !strings.Contains(got, "ring.lookup") {
				t.Errorf("redis-cli COMMAND DOCS:\n%s", got)
			}
			// Commands piped into redis-cli, with a quoted argument.
			cmd := exec.Command(cli, append(target, "--no-auth-warning", "-a", "pw")...)
			cmd.Stdin = strings.NewReader("GET \"a key\"\nPING\n")
			out, err := cmd.CombinedOutput()
			if err != nil || string(out) != owner(t, s.router, "web", "a key")+"\nPONG\n" {
				t.Errorf("redis-cli from stdin = %q, %v", out, err)
			}

			// On a terminal redis-cli starts by reading COMMAND DOCS for its
			// hints and asserts on the reply's shape: a malformed reply
			// aborts it. script(1) gives it a terminal.
			scriptCmd, err := exec.LookPath("script")
			if err != nil {
				t.Log("script(1) not installed: skipping interactive redis-cli")
				return
			}
			line := "'" + cli + "' '" + strings.Join(target, "' '") + "' --no-auth-warning -a pw"
			cmd = exec.Command(scriptCmd, "-q", "-e", "-c", line, "/dev/null")
			cmd.Env = append(os.Environ(), "TERM=dumb")
			cmd.Stdin = strings.NewReader("help ring.lookup\nhelp client setname\nGET k\nquit\n")
			cmd.WaitDelay = 5 * time.Second
			out, err = cmd.CombinedOutput()
			text := string(out)
			for _, want := range []string{"key [count] [service]", "CLIENT SETNAME", owner(t, s.router, "web", "k")} {
				if !strings.Contains(text, want) {
					t.Errorf("interactive redis-cli output lacks %q (err %v):\n%s", want, err, text)
				}
			}
			if err != nil {
				t.Errorf("interactive redis-cli: %v\n%s", err, text)
			}
		})
	}
}
