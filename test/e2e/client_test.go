package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"ringman/httpapi"
	"ringman/test/cluster"
)

// cliResult is what one CLI run printed and returned.
type cliResult struct {
	stdout, stderr string
	code           int
}

// runCLI runs `ringman args...` with env added to a clean environment.
func runCLI(t *testing.T, ctx context.Context, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RINGMAN_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("ringman %s: %v", strings.Join(args, " "), err)
	}
	r := cliResult{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
	t.Logf("ringman %s -> exit %d\nstdout:\n%sstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

func lines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// The CLI and redis-cli against a running two-node cluster.
func TestClientsAgainstRunningCluster(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 60*time.Second)
	c := newCluster(t)
	nodes, err := c.StartRing(ctx, "cli", "web", 2)
	if err != nil {
		t.Fatal(err)
	}
	all := instancesOf(nodes)
	if err := cluster.WaitInstances(ctx, nodes, all); err != nil {
		t.Fatal(err)
	}
	node := nodes[1]
	addr := []string{"--addr", node.HTTPAddr}
	const key = "shop.example.com/cart/42"
	owner, err := node.Redis().Get(ctx, key).Result()
	if err != nil {
		t.Fatalf("GET %q through go-redis: %v", key, err)
	}

	t.Run("members", func(t *testing.T) {
		r := runCLI(t, ctx, nil, append([]string{"members"}, addr...)...)
		if r.code != 0 {
			t.Fatalf("exit %d, want 0", r.code)
		}
		out := lines(r.stdout)
		if len(out) != len(nodes) {
			t.Fatalf("%d lines, want one per node (%d)", len(out), len(nodes))
		}
		col := -1
		for _, n := range nodes {
			i := slices.IndexFunc(out, func(l string) bool { return strings.Fields(l)[0] == n.Name })
			if i < 0 {
				t.Fatalf("no line for %s", n.Name)
			}
			f := strings.Fields(out[i])
			want := []string{n.Name, n.GossipAddr, "alive", "web=" + n.Instance()}
			if !slices.Equal(f, want) {
				t.Errorf("line %q: fields %q, want %q", out[i], f, want)
			}
			// Aligned columns: the address starts at the same offset on every line.
			at := strings.Index(out[i], n.GossipAddr)
			if col >= 0 && at != col {
				t.Errorf("columns not aligned: address at offset %d and %d", col, at)
			}
			col = at
		}
	})

	t.Run("members --format json", func(t *testing.T) {
		r := runCLI(t, ctx, nil, append([]string{"members", "--format", "json"}, addr...)...)
		if r.code != 0 {
			t.Fatalf("exit %d, want 0", r.code)
		}
		var ms []httpapi.Member
		if err := json.Unmarshal([]byte(r.stdout), &ms); err != nil {
			t.Fatalf("not a JSON list of members: %v", err)
		}
		if len(ms) != len(nodes) {
			t.Fatalf("%d members, want %d", len(ms), len(nodes))
		}
		for _, n := range nodes {
			i := slices.IndexFunc(ms, func(m httpapi.Member) bool { return m.Name == n.Name })
			if i < 0 {
				t.Fatalf("%s missing", n.Name)
			}
			m := ms[i]
			if m.Addr != n.GossipAddr || m.Status != "alive" || !slices.Equal(m.Services["web"], n.Instances()) {
				t.Errorf("member %+v, want addr %s, status alive, web %v", m, n.GossipAddr, n.Instances())
			}
		}
	})

	t.Run("members --status filters", func(t *testing.T) {
		r := runCLI(t, ctx, nil, append([]string{"members", "--status", "left|failed"}, addr...)...)
		if r.code != 0 || r.stdout != "" {
			t.Errorf("exit %d, stdout %q; want 0 and no member", r.code, r.stdout)
		}
	})

	t.Run("RINGMAN_ADDR", func(t *testing.T) {
		r := runCLI(t, ctx, []string{"RINGMAN_ADDR=" + node.HTTPAddr}, "members")
		if r.code != 0 || len(lines(r.stdout)) != len(nodes) {
			t.Errorf("exit %d with %d lines; want 0 and %d", r.code, len(lines(r.stdout)), len(nodes))
		}
	})

	t.Run("lookup", func(t *testing.T) {
		r := runCLI(t, ctx, nil, append([]string{"lookup", key}, addr...)...)
		if r.code != 0 {
			t.Fatalf("exit %d, want 0", r.code)
		}
		out := lines(r.stdout)
		if len(out) != 1 || strings.Fields(out[0])[0] != owner {
			t.Errorf("stdout %q; want one line starting with %s (what GET answers)", r.stdout, owner)
		}
	})

	t.Run("lookup -n 2", func(t *testing.T) {
		r := runCLI(t, ctx, nil, append([]string{"lookup", "-n", "2", key}, addr...)...)
		out := lines(r.stdout)
		if r.code != 0 || len(out) != 2 {
			t.Fatalf("exit %d with %d lines; want 0 and 2", r.code, len(out))
		}
		first, second := strings.Fields(out[0])[0], strings.Fields(out[1])[0]
		if first != owner || second == owner || !slices.Contains(all, second) {
			t.Errorf("candidates %s, %s; want the owner %s then the other instance of %v", first, second, owner, all)
		}
	})

	t.Run("lookup on an empty service exits 1", func(t *testing.T) {
		r := runCLI(t, ctx, nil, append([]string{"lookup", "--service", "nosuch", key}, addr...)...)
		if r.code != 1 {
			t.Errorf("exit %d, want 1", r.code)
		}
		if r.stdout != "" {
			t.Errorf("stdout %q, want nothing", r.stdout)
		}
		if n := len(lines(r.stderr)); n != 1 {
			t.Errorf("stderr has %d lines, want one message", n)
		}
	})

	t.Run("unreachable node exits 1", func(t *testing.T) {
		port, err := cluster.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		r := runCLI(t, ctx, nil, "members", "--addr", "127.0.0.1:"+strconv.Itoa(port))
		if r.code != 1 || len(lines(r.stderr)) != 1 {
			t.Errorf("exit %d, %d stderr lines; want 1 and one message", r.code, len(lines(r.stderr)))
		}
	})

	for _, args := range [][]string{
		{"lookup"},
		{"lookup", "a", "b"},
		{"members", "--format", "yaml"},
		{"members", "--status", "("},
		{"members", "--no-such-flag"},
		{"members", "extra"},
		{"no-such-command"},
	} {
		t.Run("usage error: "+strings.Join(args, " "), func(t *testing.T) {
			r := runCLI(t, ctx, nil, append(args, addr...)...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2", r.code)
			}
			if r.stderr == "" {
				t.Errorf("nothing on stderr")
			}
		})
	}

	t.Run("redis-cli", func(t *testing.T) {
		redisCLI, err := exec.LookPath("redis-cli")
		if err != nil {
			t.Skip("redis-cli is not installed (make test installs it: apt-get install redis-tools)")
		}
		host, port, _ := strings.Cut(node.RESPAddr, ":")
		for _, k := range []string{"/x", key, "/img/1.jpg"} {
			want, err := node.Redis().Get(ctx, k).Result()
			if err != nil {
				t.Fatalf("go-redis GET %q: %v", k, err)
			}
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			out, err := exec.CommandContext(cctx, redisCLI, "-h", host, "-p", port, "GET", k).CombinedOutput()
			cancel()
			if err != nil {
				t.Fatalf("redis-cli GET %q: %v: %s", k, err, out)
			}
			if got := strings.TrimSpace(string(out)); got != want {
				t.Errorf("redis-cli GET %q = %q, go-redis says %q", k, got, want)
			}
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := exec.CommandContext(cctx, redisCLI, "-h", host, "-p", port, "RING.MEMBERS").CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("redis-cli RING.MEMBERS: %v: %s", err, out)
		}
		got := lines(string(out))
		slices.Sort(got)
		if want := slices.Sorted(slices.Values(all)); !slices.Equal(got, want) {
			t.Errorf("redis-cli RING.MEMBERS = %q, want %q", got, want)
		}
	})
}
