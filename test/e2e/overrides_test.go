package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ringman/httpapi"
	"ringman/test/cluster"
)

// The README's override commands, exactly as documented (README: HTTP API: the
// original set_backend project's API). The tests replace the default API
// address with the node's, and nothing else.
const (
	readmeAddr   = "http://127.0.0.1:7380"
	readmePost   = `curl -X POST -d '{ "host": "some.host.com", "backend": "localhost:3000" }' http://127.0.0.1:7380/entries.json`
	readmeList   = `curl http://127.0.0.1:7380/entries.json`
	readmeDelete = `curl -X DELETE http://127.0.0.1:7380/entries/some.host.com.json`
)

// shell runs a command line with sh, as an operator pastes it, against
// addr instead of the default API address.
func shell(t *testing.T, ctx context.Context, addr, line string) string {
	t.Helper()
	line = strings.ReplaceAll(line, readmeAddr, "http://"+addr)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "sh", "-c", line)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", line, err, stderr.String())
	}
	t.Logf("$ %s\n%s", line, stdout.String())
	return stdout.String()
}

// The README's curl commands against a running node: the override wins in
// RESP lookups and /v1/lookup while it exists, and the ring owner answers
// again after the DELETE.
func TestReadmeCurlCommands(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed (apt-get install curl); the README's commands need it")
	}
	readme, err := os.ReadFile(filepath.Join(moduleRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{readmePost, readmeList, readmeDelete} {
		if !bytes.Contains(readme, []byte(line)) {
			t.Errorf("README.md does not show the command %s", line)
		}
	}
	ctx := testContext(t, 60*time.Second)
	c := newCluster(t)
	nodes, err := c.StartRing(ctx, "curl", "web", 1)
	if err != nil {
		t.Fatal(err)
	}
	node := nodes[0]
	const key = "some.host.com/x"
	owner, err := node.Redis().Get(ctx, key).Result()
	if err != nil || owner != node.Instance() {
		t.Fatalf("GET %q before the override = %q, %v; want the ring owner %s", key, owner, err, node.Instance())
	}

	var created httpapi.Override
	if out := shell(t, ctx, node.HTTPAddr, readmePost); json.Unmarshal([]byte(out), &created) != nil || created.Host != "some.host.com" || created.Backend != "localhost:3000" {
		t.Fatalf("POST answered %q, want the entry", out)
	}
	var list []httpapi.Override
	if out := shell(t, ctx, node.HTTPAddr, readmeList); json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0] != created {
		t.Fatalf("the list is %q, want the one entry %+v", out, created)
	}
	for _, k := range []string{key, "Some.Host.COM:443/x", "some.host.com"} {
		if got, err := node.Redis().Get(ctx, k).Result(); err != nil || got != "localhost:3000" {
			t.Errorf("GET %q with the override = %q, %v; want localhost:3000", k, got, err)
		}
	}
	if redisCLI, err := exec.LookPath("redis-cli"); err == nil {
		host, port, _ := strings.Cut(node.RESPAddr, ":")
		out, err := exec.CommandContext(ctx, redisCLI, "-h", host, "-p", port, "GET", key).CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != "localhost:3000" {
			t.Errorf("redis-cli GET %s = %q, %v; want localhost:3000", key, got, err)
		}
	}
	if l, err := node.API().Lookup(ctx, key, "", 3); err != nil || l.Source != "override" || l.Backend != "localhost:3000" {
		t.Errorf("/v1/lookup?key=%s = %+v, %v; want the override", key, l, err)
	}

	var removed httpapi.Override
	if out := shell(t, ctx, node.HTTPAddr, readmeDelete); json.Unmarshal([]byte(out), &removed) != nil || removed.Host != "some.host.com" {
		t.Fatalf("DELETE answered %q", out)
	}
	if out := shell(t, ctx, node.HTTPAddr, readmeList); strings.TrimSpace(out) != "[]" {
		t.Errorf("the list after the DELETE is %q, want []", out)
	}
	if got, err := node.Redis().Get(ctx, key).Result(); err != nil || got != owner {
		t.Errorf("GET %q after the DELETE = %q, %v; want the ring owner %s again", key, got, err, owner)
	}
	if l, err := node.API().Lookup(ctx, key, "", 1); err != nil || l.Source != "ring" || l.Backend != owner {
		t.Errorf("/v1/lookup after the DELETE = %+v, %v; want the ring owner", l, err)
	}
	if out := shell(t, ctx, node.HTTPAddr, readmeDelete); !strings.Contains(out, `"error"`) {
		t.Errorf("a second DELETE answered %q, want a JSON error", out)
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := cluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// Writes are durable before they are acknowledged: a client keeps setting
// overrides (1,000 hosts) while the node is killed with SIGKILL; after a
// restart on the same data dir every acknowledged entry is there.
func TestOverridesSurviveKill9(t *testing.T) {
	t.Parallel()
	const (
		hosts   = 1000
		writers = 4
	)
	ctx := testContext(t, 60*time.Second)
	c := newCluster(t)
	nodes, err := c.StartRing(ctx, "durable", "web", 1)
	if err != nil {
		t.Fatal(err)
	}
	node := nodes[0]
	hostName := func(i int) string { return fmt.Sprintf("h%04d.example.com", i) }
	backendOf := func(i int) string { return fmt.Sprintf("10.1.%d.%d:%d", i/256, i%256, 1000+i) }

	var (
		next    atomic.Int64 // the next host to write
		acked   sync.Map     // host -> backend, for every 2xx
		nAcked  atomic.Int64
		failed  atomic.Int64 // requests without a 2xx (the kill)
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		hc      = &http.Client{Timeout: 5 * time.Second}
		postURL = "http://" + node.HTTPAddr + "/entries.json"
	)
	for range writers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := int(next.Add(1) - 1)
				if i >= hosts {
					return
				}
				body := fmt.Sprintf(`{"host":%q,"backend":%q}`, hostName(i), backendOf(i))
				resp, err := hc.Post(postURL, "application/json", strings.NewReader(body))
				if err != nil {
					failed.Add(1)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					acked.Store(hostName(i), backendOf(i))
					nAcked.Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	stopWriters := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopWriters()

	if err := cluster.Poll(ctx, 5*time.Millisecond, "500 writes acknowledged", func() (bool, string) {
		return nAcked.Load() >= 500, fmt.Sprintf("%d acknowledged", nAcked.Load())
	}); err != nil {
		t.Fatal(err)
	}
	if err := node.Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := nAcked.Load()
	// Let the writers meet the dead node, so that nothing is acknowledged
	// after the restart by a request sent before it.
	if err := cluster.Poll(ctx, 5*time.Millisecond, "a write refused by the killed node", func() (bool, string) {
		return failed.Load() > 0 || next.Load() >= hosts, fmt.Sprintf("%d failed", failed.Load())
	}); err != nil {
		t.Fatal(err)
	}
	stopWriters()
	if nAcked.Load() >= hosts {
		t.Fatalf("all %d writes were acknowledged before the kill landed; nothing was tested", hosts)
	}
	t.Logf("kill -9 after %d acknowledged writes (%d in all, %d failed)", killedAt, nAcked.Load(), failed.Load())

	if err := node.Start(ctx); err != nil {
		t.Fatalf("restart after kill -9: %v", err)
	}
	list, err := node.API().Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]string{}
	for _, o := range list {
		stored[o.Host] = o.Backend
	}
	missing := 0
	acked.Range(func(k, v any) bool {
		if stored[k.(string)] != v.(string) {
			if missing < 5 {
				t.Errorf("%s was acknowledged (-> %s) but after the restart is %q", k, v, stored[k.(string)])
			}
			missing++
		}
		return true
	})
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged overrides lost by kill -9", missing, nAcked.Load())
	}
	t.Logf("all %d acknowledged overrides survived kill -9 (%d stored: requests in flight may have landed too)", nAcked.Load(), len(list))

	// The rest, as one bulk import: then every host is there.
	var rest []map[string]string
	for i := range hosts {
		if _, ok := stored[hostName(i)]; !ok {
			rest = append(rest, map[string]string{"host": hostName(i), "backend": backendOf(i)})
		}
	}
	raw, _ := json.Marshal(rest)
	resp, err := hc.Post(postURL, "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("bulk import of the other %d: %s", len(rest), resp.Status)
	}
	if list, err = node.API().Hosts(ctx); err != nil || len(list) != hosts {
		t.Fatalf("after the bulk import: %d overrides, %v; want %d", len(list), err, hosts)
	}
}

// runServe runs `ringman serve` with args that is expected to fail, bounded
// by limit, and returns what it printed and how long it took.
func runServe(t *testing.T, ctx context.Context, limit time.Duration, args ...string) (cliResult, time.Duration) {
	t.Helper()
	ports, err := cluster.FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	args = append([]string{"serve", "--profile", "fast",
		"--bind", "127.0.0.1:" + strconv.Itoa(ports[0]),
		"--redis-addr", "127.0.0.1:" + strconv.Itoa(ports[1]),
		"--http-addr", "127.0.0.1:" + strconv.Itoa(ports[2]),
	}, args...)
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RINGMAN_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("ringman %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("ringman %s still ran after %v; killed. stderr:\n%s", strings.Join(args, " "), limit, stderr.String())
	}
	r := cliResult{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
	t.Logf("ringman %s -> exit %d after %v\nstderr:\n%s", strings.Join(args, " "), r.code, took.Round(time.Millisecond), r.stderr)
	return r, took
}

// A second process on a data dir in use fails at once, saying so.
func TestSecondServeOnSameDataDir(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 60*time.Second)
	c := newCluster(t)
	nodes, err := c.StartRing(ctx, "locked", "web", 1)
	if err != nil {
		t.Fatal(err)
	}
	node := nodes[0]
	r, took := runServe(t, ctx, 10*time.Second, "--name", "intruder", "--data-dir", node.DataDir)
	if r.code == 0 {
		t.Errorf("second serve on %s exited 0", node.DataDir)
	}
	// At once: its lock wait is 100 ms; 5 s (half the limit) allows for
	// starting a process under -race on a loaded machine.
	if took > 5*time.Second {
		t.Errorf("second serve took %v to fail, want under 5s", took.Round(time.Millisecond))
	}
	if !strings.Contains(r.stderr, "in use") || !strings.Contains(r.stderr, node.DataDir) {
		t.Errorf("stderr %q does not say that %s is in use", r.stderr, node.DataDir)
	}
	if !node.Running() {
		t.Fatalf("the first node stopped: %s", node.ExitState())
	}
	if _, err := node.API().Hosts(ctx); err != nil {
		t.Errorf("the first node no longer answers: %v", err)
	}
}

// A corrupt or unreadable data file stops start-up with a clear message
// and is left exactly as it was.
func TestCorruptDataFile(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 60*time.Second)
	c := newCluster(t)

	// A real data file with overrides in it, from a node that ran.
	nodes, err := c.StartRing(ctx, "real", "web", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[0].API().SetHost(ctx, "some.host.com", "localhost:3000"); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[0].Stop(cluster.StopTimeout); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(filepath.Join(nodes[0].DataDir, "ringman.db"))
	if err != nil {
		t.Fatal(err)
	}
	if len(good) < 4*os.Getpagesize() {
		t.Fatalf("the data file has %d bytes; want a few pages", len(good))
	}
	garbage := func(n int) []byte {
		rng := rand.New(rand.NewPCG(1, 2))
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	// Both meta pages intact, every other page overwritten: bbolt cannot
	// even load its freelist.
	pageSize := int(binary.LittleEndian.Uint32(good[24:28])) // meta.pageSize, after the 16-byte page header and magic, version
	damaged := append(bytes.Clone(good[:2*pageSize]), garbage(len(good)-2*pageSize)...)
	// The pages bbolt reads at open (meta pages, freelists) intact, every
	// other page overwritten: the damage is in the data, which bbolt
	// trusts until it reads it.
	damagedData := bytes.Clone(good)
	keep := map[int]bool{0: true, 1: true}
	for meta := range 2 {
		m := good[meta*pageSize:]
		freelist := int(binary.LittleEndian.Uint64(m[48:56])) // meta.freelist
		if freelist*pageSize >= len(good) {
			t.Fatalf("meta page %d names freelist page %d, past the end of the file", meta, freelist)
		}
		overflow := int(binary.LittleEndian.Uint32(good[freelist*pageSize+12:])) // page.overflow
		for p := freelist; p <= freelist+overflow; p++ {
			keep[p] = true
		}
	}
	for p := 0; p*pageSize < len(good); p++ {
		if !keep[p] {
			copy(damagedData[p*pageSize:(p+1)*pageSize], garbage(pageSize))
		}
	}

	for _, tc := range []struct {
		name    string
		content []byte
	}{
		{"garbage", garbage(64 << 10)},
		{"text", []byte("this is not a bbolt file\n")},
		{"empty", nil},
		{"damaged pages", damaged},
		{"damaged data pages", damagedData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, "ringman.db")
			if err := os.WriteFile(file, tc.content, 0o600); err != nil {
				t.Fatal(err)
			}
			r, _ := runServe(t, ctx, 15*time.Second, "--name", "corrupt", "--data-dir", dir)
			if r.code == 0 {
				t.Errorf("serve on a %s data file exited 0", tc.name)
			}
			if !strings.Contains(r.stderr, file) || strings.Contains(r.stderr, "goroutine ") || len(lines(r.stderr)) != 1 {
				t.Errorf("stderr %q is not one line that names the data file %s", r.stderr, file)
			}
			after, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(after, tc.content) {
				t.Errorf("the %s data file was modified: %d bytes before, %d after", tc.name, len(tc.content), len(after))
			}
		})
	}
}

// An override set on one node of three reaches the other two (their API
// and their RESP lookups); a delete on another node reaches all three.
func TestOverridesShared(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 60*time.Second)
	c := newCluster(t)
	nodes, err := c.StartRing(ctx, "share", "web", 3)
	if err != nil {
		t.Fatal(err)
	}
	all := instancesOf(nodes)
	if err := cluster.WaitInstances(ctx, nodes, all); err != nil {
		t.Fatal(err)
	}
	const key = "beta.example.com/cart"
	owner, err := nodes[0].Redis().Get(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}

	// expect polls every node until its list and its RESP answer for key
	// show backend ("" = no override, the ring owner answers).
	expect := func(what, backend string) {
		t.Helper()
		want := backend
		if want == "" {
			want = owner
		}
		start := time.Now()
		err := cluster.Poll(ctx, 20*time.Millisecond, what, func() (bool, string) {
			for _, n := range nodes {
				hs, err := n.API().Hosts(ctx)
				if err != nil {
					return false, fmt.Sprintf("%s: GET /entries.json: %v", n.Name, err)
				}
				switch {
				case backend == "" && len(hs) != 0:
					return false, fmt.Sprintf("%s lists %+v", n.Name, hs)
				case backend != "" && (len(hs) != 1 || hs[0].Host != "beta.example.com" || hs[0].Backend != backend):
					return false, fmt.Sprintf("%s lists %+v", n.Name, hs)
				}
				got, err := n.Redis().Get(ctx, key).Result()
				if err != nil || got != want {
					return false, fmt.Sprintf("%s: GET %s = %q, %v; want %s", n.Name, key, got, err, want)
				}
			}
			return true, ""
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: on every node after %v", what, time.Since(start).Round(time.Millisecond))
	}

	set, err := nodes[0].API().SetHost(ctx, "beta.example.com", "10.0.0.9:3000")
	if err != nil {
		t.Fatal(err)
	}
	if set.Node != nodes[0].Name {
		t.Errorf("the entry says it was written by %q, want %s", set.Node, nodes[0].Name)
	}
	expect("set on "+nodes[0].Name, "10.0.0.9:3000")
	if _, err := nodes[1].API().SetHost(ctx, "beta.example.com", "10.0.0.10:3000"); err != nil {
		t.Fatal(err)
	}
	expect("replaced on "+nodes[1].Name, "10.0.0.10:3000")
	if _, err := nodes[2].API().DeleteHost(ctx, "beta.example.com"); err != nil {
		t.Fatal(err)
	}
	expect("deleted on "+nodes[2].Name, "")
}
