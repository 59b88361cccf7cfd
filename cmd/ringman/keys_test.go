package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"ringman/httpapi"
)

// syncBuffer is a bytes.Buffer that a running serve writes to while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serveRun is a `ringman serve` running in the test process, as the binary
// runs it (flags, store, gossip, listeners), stopped through its context.
type serveRun struct {
	out, errOut *syncBuffer
	done        chan error
	cancel      context.CancelFunc
	stopped     bool
}

// startServe runs `ringman serve` with args (plus a gossip port of its own,
// the fast profile and a 5 s leave) and waits for its banner. A leave ends
// as soon as it has spread, so its timeout costs nothing when the machine
// keeps up; when it does not, the others must still see a leave, not a
// failure, which a 1 s bound did not ensure.
func startServe(t *testing.T, args ...string) *serveRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &serveRun{out: &syncBuffer{}, errOut: &syncBuffer{}, done: make(chan error, 1), cancel: cancel}
	root := newRootCmd()
	root.SetArgs(append([]string{"serve", "--bind", "127.0.0.1:0", "--profile", "fast", "--leave-timeout", "5s"}, args...))
	root.SetOut(r.out)
	root.SetErr(r.errOut)
	go func() { r.done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(r.out.String(), "data file:") {
		select {
		case err := <-r.done:
			r.stopped = true
			t.Fatalf("serve %q exited before its banner: %v\n%s", args, err, r.errOut)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve %q printed no banner within 20s; stderr:\n%s", args, r.errOut)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r
}

// stop cancels the node (drain, leave, close) and waits for serve to return.
func (r *serveRun) stop(t *testing.T) {
	t.Helper()
	if r.stopped {
		return
	}
	r.stopped = true
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("serve returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("serve did not stop within 15s of its context ending")
	}
}

// banner returns the value of a banner line ("HTTP API", "gossip", ...).
func (r *serveRun) banner(t *testing.T, field string) string {
	t.Helper()
	for line := range strings.SplitSeq(r.out.String(), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("banner has no %q line:\n%s", field, r.out)
	return ""
}

func (r *serveRun) apiAddr(t *testing.T) string {
	return strings.TrimPrefix(r.banner(t, "HTTP API"), "http://")
}

func (r *serveRun) gossipAddr(t *testing.T) string {
	return strings.Fields(r.banner(t, "gossip"))[0]
}

func newGossipKey(t *testing.T) string {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k)
}

// keysTable parses `keys list` text output into "KEY INSTALLED PRIMARY"
// rows, checking the header and the column alignment.
func keysTable(t *testing.T, out string) []string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) < 2 || strings.Join(strings.Fields(lines[0]), " ") != "KEY INSTALLED PRIMARY" {
		t.Fatalf("keys list printed %q; want a KEY INSTALLED PRIMARY table", out)
	}
	col := strings.Index(lines[0], "INSTALLED")
	var rows []string
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 3 {
			break
		}
		if strings.Index(l, f[1]) != col {
			t.Errorf("keys list: columns not aligned in %q", out)
		}
		rows = append(rows, strings.Join(f, " "))
	}
	return rows
}

// TestKeysCommands rotates the key of a two-node cluster (real serve
// processes' wiring, in the test process) with the CLI, checks the output
// and exit codes of every keys command, that a node that was away is
// reported, and that it comes back with its saved keyring despite a stale
// --encrypt.
func TestKeysCommands(t *testing.T) {
	k1, k2, k3 := newGossipKey(t), newGossipKey(t), newGossipKey(t)
	dirB := filepath.Join(t.TempDir(), "b")
	a := startServe(t, "--name", "a", "--encrypt", k1, "--api-token", "tok", "--data-dir", t.TempDir(),
		"--http-addr", "127.0.0.1:0", "--redis-addr", "127.0.0.1:0", "--service", "web=127.0.0.1:9001")
	if got := a.banner(t, "encrypted"); got != "yes, 1 key from --encrypt" {
		t.Errorf("a's banner says encrypted: %q", got)
	}
	bArgs := []string{"--name", "b", "--encrypt", k1, "--api-token", "tok", "--data-dir", dirB, "--join", a.gossipAddr(t),
		"--http-addr", "127.0.0.1:0", "--redis-addr", "127.0.0.1:0", "--service", "web=127.0.0.1:9002"}
	b := startServe(t, bArgs...)
	addr := a.apiAddr(t)
	cli := func(args ...string) (int, string, string) {
		return runCLI(append(args, "--addr", addr, "--api-token", "tok")...)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, out, _ := cli("members")
		if strings.Count(out, "alive") == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a does not see b alive within 10s: %q", out)
		}
		time.Sleep(20 * time.Millisecond)
	}

	code, out, errOut := cli("keys", "list")
	if rows := keysTable(t, out); code != 0 || fmt.Sprint(rows) != fmt.Sprint([]string{k1 + " 2/2 2/2"}) ||
		!strings.HasSuffix(out, "\n2 of 2 nodes answered\n") {
		t.Fatalf("keys list: exit %d, %q (stderr %q)", code, out, errOut)
	}

	// Refused: nothing changes, exit 1, one line.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"keys", "use", k2}, "is not installed on 2 of 2 answering nodes (a, b): install it on every node first"},
		{[]string{"keys", "remove", k1}, "is the primary key on 2 of 2 answering nodes (a, b)"},
	} {
		code, out, errOut := cli(tc.args...)
		if code != 1 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 1 and one line with %q", tc.args[:2], code, out, errOut, tc.want)
		}
	}
	// Usage errors: exit 2, one line, no request sent.
	for _, args := range [][]string{
		{"keys", "install", "not base64!"},
		{"keys", "install", base64.StdEncoding.EncodeToString([]byte("short"))},
		{"keys", "use"},
		{"keys", "remove", k1, k2},
		{"keys", "list", "extra"},
		{"keys", "list", "--format", "yaml"},
		{"keys", "nosuch"},
	} {
		code, out, errOut := cli(args...)
		if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "ringman: ") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and one line", args, code, out, errOut)
		}
	}
	// Without the token: exit 1.
	code, _, errOut = runCLI("keys", "install", k2, "--addr", addr)
	if code != 1 || !strings.Contains(errOut, "API token") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("install without the token: exit %d, %q", code, errOut)
	}
	if _, out, _ := cli("keys", "list"); fmt.Sprint(keysTable(t, out)) != fmt.Sprint([]string{k1 + " 2/2 2/2"}) {
		t.Fatalf("refused commands changed the keyring: %q", out)
	}

	// The rotation.
	for _, step := range []struct {
		args []string
		out  string
	}{
		{[]string{"keys", "install", k2}, "key installed on 2 of 2 nodes\n"},
		{[]string{"keys", "use", k2}, "primary key changed on 2 of 2 nodes\n"},
		{[]string{"keys", "remove", k1}, "key removed from 2 of 2 nodes\n"},
	} {
		if code, out, errOut := cli(step.args...); code != 0 || out != step.out || errOut != "" {
			t.Fatalf("%q: exit %d, %q (stderr %q); want %q", step.args[:2], code, out, errOut, step.out)
		}
	}
	code, out, _ = cli("keys", "list", "--format", "json")
	var res httpapi.KeyringResult
	if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil || res.Nodes != 2 || res.Answered != 2 ||
		len(res.Keys) != 1 || res.Keys[0] != (httpapi.KeyStatus{Key: k2, Installed: 2, Primary: 2}) {
		t.Fatalf("keys list --format json after the rotation: exit %d, %q", code, out)
	}

	// b is away (left) during a change: reported, exit 1.
	b.stop(t)
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, out, _ := cli("members", "--status", "left")
		if strings.Contains(out, "b ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a does not see b as left within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, out, errOut = cli("keys", "install", k3)
	if code != 1 || !regexp.MustCompile(`^key installed on 1 of 2 nodes\nfailed: b \(127\.0\.0\.1:\d+\): node left the cluster, so it missed this change\n$`).MatchString(out) ||
		strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "1 of 2 nodes did not answer or failed (b)") {
		t.Errorf("install with b away: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = cli("keys", "list")
	if rows := keysTable(t, out); code != 1 || fmt.Sprint(rows) != fmt.Sprint([]string{k2 + " 1/1 1/1", k3 + " 1/1 0/1"}) ||
		!strings.Contains(out, "\n1 of 2 nodes answered\nfailed: b ") {
		t.Errorf("keys list with b away: exit %d, %q", code, out)
	}

	// b restarts with the flags it had: its data file has the rotated
	// keyring, and the stale --encrypt (a key it removed) is ignored.
	b = startServe(t, bArgs...)
	if got := b.banner(t, "encrypted"); got != "yes, 1 key from the data file" {
		t.Errorf("restarted b's banner says encrypted: %q", got)
	}
	if !strings.Contains(b.errOut.String(), "--encrypt is a key this node removed in a key rotation: ignored") {
		t.Errorf("restarted b did not warn about its stale --encrypt:\n%s", b.errOut)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		code, out, _ = cli("keys", "list")
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("keys list after b's restart: exit %d, %q", code, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if rows := keysTable(t, out); fmt.Sprint(rows) != fmt.Sprint([]string{k2 + " 2/2 2/2", k3 + " 1/2 0/2"}) {
		t.Errorf("keys list after b's restart: %q", out)
	}
}

// TestServeProtectedMode: an API or RESP that other hosts can reach, without
// a token or password, gets a warning in the banner and the log; loopback,
// unix sockets and secrets get none.
func TestServeProtectedMode(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "r.sock")
	for _, tc := range []struct {
		name  string
		args  []string
		warns []string
	}{
		{"open on every interface", []string{"--http-addr", "0.0.0.0:0", "--redis-addr", "0.0.0.0:0"},
			[]string{"the HTTP API on ", "(every interface) is reachable from other hosts and has no --api-token",
				"RESP on ", "(every interface) is reachable from other hosts and has no --requirepass"}},
		{"with secrets", []string{"--http-addr", "0.0.0.0:0", "--redis-addr", "0.0.0.0:0", "--api-token", "t", "--requirepass", "p"}, nil},
		{"token only", []string{"--http-addr", "0.0.0.0:0", "--redis-addr", "0.0.0.0:0", "--api-token", "t"},
			[]string{"RESP on ", "(every interface) is reachable from other hosts and has no --requirepass"}},
		{"loopback", []string{"--http-addr", "127.0.0.1:0", "--redis-addr", "127.0.0.1:0"}, nil},
		{"unix socket", []string{"--http-addr", "127.0.0.1:0", "--redis-addr", "unix:" + sock}, nil},
		{"gossip on every interface", []string{"--bind", "0.0.0.0:0", "--http-addr", "127.0.0.1:0", "--redis-addr", "127.0.0.1:0"},
			[]string{"gossip on 0.0.0.0:", "(every interface) is reachable from other hosts and not encrypted (no --encrypt)"}},
		{"gossip on every interface, encrypted", []string{"--bind", "0.0.0.0:0", "--encrypt", newGossipKey(t),
			"--http-addr", "127.0.0.1:0", "--redis-addr", "127.0.0.1:0"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startServe(t, append([]string{"--name", "p", "--data-dir", t.TempDir()}, tc.args...)...)
			out := r.out.String()
			var warnings []string
			for line := range strings.SplitSeq(out, "\n") {
				if w, ok := strings.CutPrefix(line, "  WARNING:    "); ok {
					warnings = append(warnings, w)
				}
			}
			if len(warnings) != len(tc.warns)/2 {
				t.Fatalf("banner has %d warnings, want %d:\n%s", len(warnings), len(tc.warns)/2, out)
			}
			for i, w := range warnings {
				if !strings.Contains(w, tc.warns[2*i]) || !strings.Contains(w, tc.warns[2*i+1]) {
					t.Errorf("warning %q does not say %q and %q", w, tc.warns[2*i], tc.warns[2*i+1])
				}
				if n := strings.Count(r.errOut.String(), "level=WARN msg=\""+w); n != 1 {
					t.Errorf("warning logged %d times, want once: %q", n, w)
				}
			}
		})
	}
}

// TestServeRefusesOtherClusters: a node with another cluster label, another
// gossip key or no key cannot join; the joiner's `ringman join` fails with
// the reason and the node it tried logs why it refused it.
func TestServeRefusesOtherClusters(t *testing.T) {
	key := newGossipKey(t)
	a := startServe(t, "--name", "a", "--label", "blue", "--encrypt", key, "--data-dir", t.TempDir(),
		"--http-addr", "127.0.0.1:0", "--redis-addr", "127.0.0.1:0")
	for _, tc := range []struct {
		name   string
		args   []string
		joiner string // in the joiner's error
		seed   string // in a's log line
	}{
		{"otherlabel", []string{"--label", "green", "--encrypt", key}, "cluster label", "unacceptable label"},
		{"otherkey", []string{"--label", "blue", "--encrypt", newGossipKey(t)}, "the gossip encryption keys differ", "no installed keys could decrypt"},
		{"nokey", []string{"--label", "blue"}, "the other node encrypts gossip and this one has no key", "remote state is not encrypted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startServe(t, append([]string{"--name", tc.name, "--data-dir", t.TempDir(),
				"--http-addr", "127.0.0.1:0", "--redis-addr", "127.0.0.1:0"}, tc.args...)...)
			code, out, errOut := runCLI("join", a.gossipAddr(t), "--addr", n.apiAddr(t))
			if code != 1 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "join failed") ||
				!strings.Contains(errOut, tc.joiner) {
				t.Errorf("join: exit %d, stdout %q, stderr %q; want exit 1 and one line with %q", code, out, errOut, tc.joiner)
			}
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(a.errOut.String(), tc.seed) {
				if time.Now().After(deadline) {
					t.Fatalf("a did not log %q within 5s:\n%s", tc.seed, a.errOut)
				}
				time.Sleep(10 * time.Millisecond)
			}
			for line := range strings.SplitSeq(a.errOut.String(), "\n") {
				if strings.Contains(line, tc.seed) && (!strings.Contains(line, "level=ERROR") ||
					!strings.Contains(line, "refused gossip from a node of another cluster or with another key")) {
					t.Errorf("a's log line does not say it refused the node: %s", line)
				}
			}
			if _, out, _ := runCLI("members", "--addr", a.apiAddr(t)); strings.Contains(out, tc.name) {
				t.Errorf("a lists the refused node: %q", out)
			}
		})
	}
}
