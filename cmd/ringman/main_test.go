package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"ringman/discovery"
	"ringman/hostmap"
	"ringman/httpapi"
	"ringman/ring"
	"ringman/router"
	"ringman/store"
)

// testNode is a real single-node cluster with its API, as `serve` wires it.
type testNode struct {
	addr  string
	node  *discovery.Node
	rt    *router.Router
	table *hostmap.Table
}

// startNode runs a real single-node cluster with its API, as `serve` wires it.
func startNode(t *testing.T) (addr string, node *discovery.Node, rt *router.Router) {
	t.Helper()
	n := startTestNode(t, "")
	return n.addr, n.node, n.rt
}

// startTestNode is startNode with the override table, its data file in a
// temporary dir, and the API token (none when "").
func startTestNode(t *testing.T, token string, edit ...func(*discovery.Config)) testNode {
	t.Helper()
	rt, err := router.New(ring.DefaultSettings(), "web")
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	table, err := hostmap.Open(st.DB(), hostmap.Options{Node: "cli-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { table.Close() })
	rt.SetOverrides(table)
	cfg := discovery.Config{
		Name:        "cli-test",
		BindAddr:    "127.0.0.1:0",
		Profile:     "fast",
		Services:    map[string][]string{"web": {"127.0.0.1:9001", "127.0.0.1:9002"}, "thumbs": {"127.0.0.1:9101"}},
		Fingerprint: ring.DefaultSettings().Fingerprint(),
		OnChange:    func(live map[string][]string) { rt.Update(live) },
	}
	for _, e := range edit {
		e(&cfg)
	}
	node, err := discovery.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Shutdown() })
	srv := httptest.NewServer(httpapi.New(httpapi.Config{Router: rt, Cluster: node, Overrides: table, Token: token}))
	t.Cleanup(srv.Close)
	deadline := time.Now().Add(5 * time.Second)
	for !node.Draining() && rt.Ring("web").Len() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("web ring has %d instances after 5s, want 2", rt.Ring("web").Len())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return testNode{addr: strings.TrimPrefix(srv.URL, "http://"), node: node, rt: rt, table: table}
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestMembers(t *testing.T) {
	addr, node, _ := startNode(t)
	code, out, errOut := runCLI("members", "--addr", addr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	fields := strings.Fields(out)
	want := []string{"cli-test", node.Addr(), "alive", "thumbs=127.0.0.1:9101,web=127.0.0.1:9001,web=127.0.0.1:9002"}
	if strings.Join(fields, " ") != strings.Join(want, " ") {
		t.Errorf("members printed %q, want fields %q", out, want)
	}

	code, out, _ = runCLI("members", "--addr", addr, "--format", "json")
	var ms []httpapi.Member
	if code != 0 || json.Unmarshal([]byte(out), &ms) != nil || len(ms) != 1 || ms[0].Name != "cli-test" {
		t.Errorf("members --format json: exit %d, %q", code, out)
	}

	code, out, _ = runCLI("members", "--addr", addr, "--status", "failed|left")
	if code != 0 || out != "" {
		t.Errorf("members --status failed|left: exit %d, %q; want nothing", code, out)
	}
	code, out, _ = runCLI("members", "--addr", addr, "--status", "ali.*")
	if code != 0 || !strings.Contains(out, "cli-test") {
		t.Errorf("members --status ali.*: exit %d, %q", code, out)
	}
}

// TestMembersCheck: the node asked shows its health check, and why it
// fails.
func TestMembersCheck(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer backend.Close()
	n := startTestNode(t, "", func(c *discovery.Config) {
		c.Check = discovery.Check{URL: backend.URL + "/health", Interval: time.Hour}
	})
	code, out, errOut := runCLI("members", "--addr", n.addr)
	want := "check failing (1 failed in a row): GET " + backend.URL + "/health: 503 Service Unavailable (want 200-399)"
	if code != 0 || !strings.Contains(out, "draining") || !strings.HasSuffix(strings.TrimSpace(out), want) {
		t.Errorf("members: exit %d, %q (stderr %q); want the drained node with %q", code, out, errOut, want)
	}
	code, out, _ = runCLI("members", "--addr", n.addr, "--format", "json")
	var ms []httpapi.Member
	if err := json.Unmarshal([]byte(out), &ms); code != 0 || err != nil || len(ms) != 1 || ms[0].Check == nil {
		t.Fatalf("members --format json: exit %d, %q", code, out)
	}
	if c := ms[0].Check; c.State != "failing" || c.Failures != 1 || c.LastErrorAt == nil || c.URL != backend.URL+"/health" {
		t.Errorf("check in JSON: %+v", c)
	}
}

// TestWeight: `ringman weight` changes one of the node's instances, as
// members then shows; another node's instance and a bad weight are refused.
func TestWeight(t *testing.T) {
	n := startTestNode(t, "")
	code, out, errOut := runCLI("weight", "127.0.0.1:9001", "3", "--addr", n.addr)
	if code != 0 || out != "web=127.0.0.1:9001,weight=3\n" {
		t.Errorf("weight: exit %d, %q (stderr %q)", code, out, errOut)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, out, _ = runCLI("members", "--addr", n.addr)
		if strings.Contains(out, "web=127.0.0.1:9001,weight=3") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members after 10s: %q", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, tc := range []struct {
		args         []string
		out, wantErr string
	}{
		{[]string{"weight", "127.0.0.1:9101", "2", "-s", "thumbs"}, "thumbs=127.0.0.1:9101,weight=2\n", ""},
		{[]string{"weight", "10.9.9.9:80", "2"}, "", "not an instance of this node: web=10.9.9.9:80 (it advertises thumbs=127.0.0.1:9101,weight=2 web=127.0.0.1:9001,weight=3 web=127.0.0.1:9002)"},
		{[]string{"weight", "127.0.0.1:9001", "101"}, "", "want 0 to 100"},
		{[]string{"weight", "127.0.0.1:9001", "heavy"}, "", "WEIGHT heavy: want a whole number"},
	} {
		code, out, errOut := runCLI(append(tc.args, "--addr", n.addr)...)
		if (code == 0) != (tc.wantErr == "") || out != tc.out || !strings.Contains(errOut, tc.wantErr) {
			t.Errorf("%v: exit %d, %q, stderr %q; want %q, error %q", tc.args, code, out, errOut, tc.out, tc.wantErr)
		}
	}
}

func TestLookup(t *testing.T) {
	addr, _, rt := startNode(t)
	want, _ := rt.Lookup("web", []byte("/img/1.jpg"))
	code, out, errOut := runCLI("lookup", "/img/1.jpg", "--addr", addr)
	if code != 0 || out != want+"\tring\n" {
		t.Errorf("lookup: exit %d, %q (stderr %q), want %q", code, out, errOut, want+"\tring\n")
	}
	code, out, _ = runCLI("lookup", "/img/1.jpg", "--addr", addr, "-n", "5")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], want) {
		t.Errorf("lookup -n 5 over 2 instances: exit %d, %q", code, out)
	}
	code, out, _ = runCLI("lookup", "/img/1.jpg", "--addr", addr, "-s", "thumbs", "--format", "json")
	var l httpapi.Lookup
	if code != 0 || json.Unmarshal([]byte(out), &l) != nil || l.Backend != "127.0.0.1:9101" || l.Service != "thumbs" {
		t.Errorf("lookup -s thumbs --format json: exit %d, %q", code, out)
	}
	code, out, errOut = runCLI("lookup", "/x", "--addr", addr, "-s", "nothing")
	if code != 1 || out != "" || !strings.Contains(errOut, `unknown service "nothing"`) || strings.Count(errOut, "\n") != 1 {
		t.Errorf("lookup on an unknown service: exit %d, stdout %q, stderr %q; want exit 1 and one line", code, out, errOut)
	}
	rt.Know("empty") // as a --db mapping does
	code, out, errOut = runCLI("lookup", "/x", "--addr", addr, "-s", "empty")
	if code != 1 || out != "" || !strings.Contains(errOut, "no live instance") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("lookup on a service with no live instance: exit %d, stdout %q, stderr %q; want exit 1 and one line", code, out, errOut)
	}
	code, out, _ = runCLI("lookup", "/img/1.jpg", "--addr", addr, "-n", "8")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || len(lines) != 2 {
		t.Errorf("lookup -n 8 over 2 instances: exit %d, %q", code, out)
	}
}

// -n outside 1..8 is a usage error (exit 2) found before any request, as
// RESP and HTTP refuse it.
func TestLookupCandidatesRule(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, `{"error":"not this test's node"}`, http.StatusTeapot)
	}))
	t.Cleanup(srv.Close)
	for _, n := range []string{"0", "9", "100", "-1"} {
		code, out, errOut := runCLI("lookup", "/x", "--addr", srv.URL, "-n", n)
		if code != 2 || out != "" || !strings.Contains(errOut, "-n must be a whole number from 1 to 8, got "+n) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("lookup -n %s: exit %d, stdout %q, stderr %q; want exit 2 and one line naming the range", n, code, out, errOut)
		}
	}
	if got := requests.Load(); got != 0 {
		t.Errorf("the node got %d requests, want none", got)
	}
}

func TestDrain(t *testing.T) {
	addr, node, _ := startNode(t)
	code, out, _ := runCLI("drain", "--addr", addr)
	if code != 0 || !strings.HasPrefix(out, "draining") || !node.Draining() {
		t.Fatalf("drain: exit %d, %q, draining=%v", code, out, node.Draining())
	}
	code, out, _ = runCLI("drain", "--undo", "--addr", addr)
	if code != 0 || !strings.HasPrefix(out, "serving") || node.Draining() {
		t.Fatalf("drain --undo: exit %d, %q, draining=%v", code, out, node.Draining())
	}
}

func TestJoinFailureIsExit1(t *testing.T) {
	addr, _, _ := startNode(t)
	code, _, errOut := runCLI("join", "127.0.0.1:1", "--addr", addr)
	if code != 1 || !strings.Contains(errOut, "join failed") {
		t.Errorf("join to nowhere: exit %d, stderr %q", code, errOut)
	}
}

func TestUnreachableNode(t *testing.T) {
	code, _, errOut := runCLI("members", "--addr", "127.0.0.1:1")
	if code != 1 || !strings.Contains(errOut, "cannot reach ringman at http://127.0.0.1:1") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"nosuchcommand"},
		{"lookup"},
		{"lookup", "a", "b"},
		{"members", "--format", "yaml"},
		{"members", "--status", "("},
		{"members", "--no-such-flag"},
		{"join"},
		{"hosts", "extra"},
		{"hosts", "set", "a.com"},
		{"hosts", "set", "a.com", "b:1", "c"},
		{"hosts", "rm"},
		{"hosts", "list", "x"},
		{"hosts", "list", "--format", "yaml"},
		{"hosts", "list", "--no-such-flag"},
		{"hosts", "set", "a.com", "b:1", "--addr", "ftp://x"},
		{"members", "--addr", "ftp://x"},
		{"serve", "--partitions", "0"},
		{"serve", "--load", "0.5"},
		{"serve", "--service", "web=nohost"},
		{"serve", "--service", "web=h:70000"},
		{"serve", "--service", "bad name=h:1"},
		{"serve", "--db", "x=thumbs"},
		{"serve", "--encrypt", "not-base64!"},
		{"serve", "--encrypt", base64.StdEncoding.EncodeToString([]byte("short"))},
		{"serve", "--log-level", "loud"},
		{"serve", "--log-format", "xml"},
		{"serve", "--socket-mode", "999"},
		{"serve", "--leave-timeout", "0s"},
		{"serve", "--max-clock-offset", "0s"},
		{"serve", "extra-arg"},
	} {
		code, out, errOut := runCLI(args...)
		if code != 2 || strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "ringman: ") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and one line", args, code, out, errOut)
		}
	}
}

func TestServeFlagsFromEnvironment(t *testing.T) {
	t.Setenv("RINGMAN_PARTITIONS", "0")
	code, _, errOut := runCLI("serve")
	if code != 2 || !strings.Contains(errOut, "partitions") {
		t.Errorf("RINGMAN_PARTITIONS=0: exit %d, %q", code, errOut)
	}
	t.Setenv("RINGMAN_PARTITIONS", "many")
	code, _, errOut = runCLI("serve")
	if code != 2 || !strings.Contains(errOut, "RINGMAN_PARTITIONS") {
		t.Errorf("RINGMAN_PARTITIONS=many: exit %d, %q", code, errOut)
	}
}

func TestParseServices(t *testing.T) {
	o := serveOptions{name: "n", bind: "127.0.0.1:0", redisAddr: "unix:/tmp/r.sock", httpAddr: ":0", profile: "lan",
		defaultService: "web", services: []string{"10.0.0.1:80", "thumbs=10.0.0.2:81", "web=[::1]:82", "thumbs=10.0.0.3:83", "weight=2", "id=t3", "10.0.0.4:84", "id=w4"},
		dbs: []string{"1=thumbs"}, partitions: 7, load: 1.5, replication: 3, socketMode: "0660",
		logLevel: "debug", logFormat: "json", checkInterval: time.Second, checkTimeout: time.Second, checkRise: 2, checkFall: 3, checkStatus: "200-399", idleTimeout: time.Second, leaveTimeout: time.Second, tombstoneTTL: time.Hour, maxClockOffset: time.Minute}
	c, err := o.config(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(c.Services, c.DBs, c.Ring.Partitions, c.SocketMode)
	want := "map[thumbs:[10.0.0.2:81 10.0.0.3:83,id=t3,weight=2] web:[10.0.0.1:80 [::1]:82 10.0.0.4:84,id=w4]] map[1:thumbs] 7 -rw-rw----"
	if got != want {
		t.Errorf("parsed %s, want %s", got, want)
	}
}

func TestKeygenAndVersion(t *testing.T) {
	code, out, _ := runCLI("keygen")
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
	if code != 0 || err != nil || len(key) != 32 {
		t.Errorf("keygen: exit %d, %q", code, out)
	}
	code, out, _ = runCLI("version")
	want := fmt.Sprintf("ringman %s (commit %s, %s, %s/%s)\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if code != 0 || out != want {
		t.Errorf("version: exit %d, %q; want %q", code, out, want)
	}
	code, out, _ = runCLI("completion", "bash")
	if code != 0 || !strings.Contains(out, "ringman") {
		t.Errorf("completion bash: exit %d", code)
	}
}

func TestBuildInfoFillsVersionAndCommit(t *testing.T) {
	info := func(mainVersion string, kv ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{Main: debug.Module{Path: "ringman", Version: mainVersion}}
		for i := 0; i+1 < len(kv); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return bi
	}
	const rev = "0123456789abcdef0123456789abcdef01234567"
	for _, tc := range []struct {
		name             string
		version, commit  string // as the ldflags left them
		info             *debug.BuildInfo
		wantVer, wantCom string
	}{
		{"ldflags win", "v1.2.0", "abc1234", info("v9.9.9", "vcs.revision", rev), "v1.2.0", "abc1234"},
		{"go build in a checkout", "dev", "unknown", info("(devel)", "vcs.revision", rev, "vcs.modified", "false"), "dev", "0123456789ab"},
		{"go build with local changes", "dev", "unknown", info("(devel)", "vcs.revision", rev, "vcs.modified", "true"), "dev", "0123456789ab-dirty"},
		{"go install module@version", "dev", "unknown", info("v1.3.0", "vcs.revision", rev), "v1.3.0", "0123456789ab"},
		{"no VCS information", "dev", "unknown", info(""), "dev", "unknown"},
		{"no build information", "dev", "unknown", nil, "dev", "unknown"},
	} {
		v, c := fromBuildInfo(tc.version, tc.commit, tc.info)
		if v != tc.wantVer || c != tc.wantCom {
			t.Errorf("%s: version %q, commit %q; want %q, %q", tc.name, v, c, tc.wantVer, tc.wantCom)
		}
	}
}
