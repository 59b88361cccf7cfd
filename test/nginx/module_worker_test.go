package nginx

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ringman/test/cluster"
)

// workers lists the PIDs of the nginx master's children (its workers).
func workers(dir string) ([]int, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "logs", "nginx.pid"))
	if err != nil {
		return nil, err
	}
	master := strings.TrimSpace(string(raw))
	kids, err := os.ReadFile(filepath.Join("/proc", master, "task", master, "children"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(kids)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// A worker killed with SIGKILL is replaced by the master; the new worker
// loads the table by itself and routes as ringman says, with no help from
// ringman (nothing changed there).
func TestModuleWorkerKilled(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	f := newModuleFixture(t, ctx, "module.conf", 3, nil)
	before, err := workers(f.nginx.Dir)
	if err != nil || len(before) != 1 {
		t.Fatalf("nginx workers: %v %v, want one", before, err)
	}
	if err := syscall.Kill(before[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cluster.Poll(ctx, 20*time.Millisecond, "a new worker", func() (bool, string) {
		now, err := workers(f.nginx.Dir)
		if err != nil {
			return false, err.Error()
		}
		return len(now) == 1 && now[0] != before[0], fmt.Sprintf("workers %v (killed %d)", now, before[0])
	})
	if err != nil {
		t.Fatal(err)
	}
	// The new worker answers from the table it loaded at start-up.
	if _, _, err := f.settled(ctx, host, paths("after-kill", 200)); err != nil {
		t.Fatal(err)
	}
}

// With balance_factor off (the default), a hot URL's requests all stay on
// its owner however many are in flight: keys never spill.
func TestModuleNoBalanceFactorNeverSpills(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	f := newModuleFixture(t, ctx, "module.conf", 3, map[string]string{
		"worker_processes 1;": "worker_processes 2;",
	})
	const inFlight = 6
	owner := f.backends[0]
	mine := f.ownedBy(owner, inFlight)
	releaseAll := f.holdAll()
	defer releaseAll()
	results := make(chan result, inFlight)
	for i := range inFlight {
		go func() {
			r, err := f.get(host, mine[i])
			if err != nil {
				r.Backend = err.Error()
			}
			results <- r
		}()
	}
	err := cluster.Poll(ctx, 5*time.Millisecond, fmt.Sprintf("%d requests held", inFlight), func() (bool, string) {
		total, counts := f.held()
		return total == inFlight, fmt.Sprint(counts)
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := owner.Held(); n != inFlight {
		t.Errorf("%d of %d held requests on the owner %s, want all: without balance_factor keys never spill", n, inFlight, owner.Name)
	}
	releaseAll()
	for range inFlight {
		if r := <-results; r.Status != http.StatusOK || r.Backend != owner.Name {
			t.Errorf("a held request: %+v, want 200 from %s", r, owner.Name)
		}
	}
}

// balance_factor with an override on a service that has no live instance:
// the override is still served (the bound divides by the instance count,
// which is then 0).
func TestModuleBalanceFactorOverrideNoInstances(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	f := newModuleFixture(t, ctx, "module.conf", 1, balanceEdits)
	const pinned = "pinned.example.test"
	target := f.backends[0]
	if _, err := f.nodes[0].API().SetHost(ctx, pinned, target.Addr); err != nil {
		t.Fatal(err)
	}
	if _, err := f.nodes[0].API().Drain(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitInstances(ctx, f.nodes, nil); err != nil {
		t.Fatal(err)
	}
	err := cluster.Poll(ctx, 20*time.Millisecond, "nginx sends "+pinned+" to "+target.Name+" with the ring empty", func() (bool, string) {
		r, err := f.get(host, "/no/route")
		if err != nil {
			return false, err.Error()
		}
		if r.Status != http.StatusNotFound {
			return false, fmt.Sprintf("a key without override: %+v, want 404 (ring not empty yet?)", r)
		}
		r, err = f.get(pinned, "/x")
		if err != nil {
			return false, err.Error()
		}
		return r.Status == http.StatusOK && r.Backend == target.Name, fmt.Sprintf("%s: %+v", pinned, r)
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(f.nginx.ErrorLog(), "exited on signal") {
		t.Errorf("a worker crashed:\n%s", f.nginx.ErrorLog())
	}
}

// The balancer alone (module.conf without set_backend): with no table it
// gives nginx no peer, a 502 that is logged once (the missing file), not
// once per request ("no live upstreams"); with every instance drained, a
// key without an override gets the same 502, and the empty ring is logged
// once when its table loads.
func TestModuleBalancerAloneLogsOnce(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	f, so, tables, empty := newNoTableFixture(t, ctx)
	alone := map[string]string{"set_backend $ringman_owner;": ""}
	f.nginx = startEditedNginx(t, "module.conf", alone, map[string]string{"MODULE": so, "RINGMAN_TABLES": empty})
	const requests = 5
	for i := range requests {
		r, err := f.get(host, fmt.Sprintf("/none/%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != http.StatusBadGateway {
			t.Errorf("GET /none/%d with no table: %+v, want 502", i, r)
		}
	}
	log := f.nginx.ErrorLog()
	if n := strings.Count(log, fmt.Sprintf(`no table "%s/web.table"`, empty)); n != 1 {
		t.Errorf("the missing table was logged %d times, want once:\n%s", n, log)
	}
	if strings.Contains(log, "no live upstreams") {
		t.Errorf("nginx logged each request without a table:\n%s", log)
	}

	f.nginx.Stop()
	f.nginx = startEditedNginx(t, "module.conf", alone, map[string]string{"MODULE": so, "RINGMAN_TABLES": tables})
	waitStatus := func(path string, want int, what string) {
		t.Helper()
		err := cluster.Poll(ctx, 20*time.Millisecond, what, func() (bool, string) {
			r, err := f.get(host, path)
			if err != nil {
				return false, err.Error()
			}
			return r.Status == want, fmt.Sprintf("GET %s: %+v", path, r)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	waitStatus("/routed", http.StatusOK, "nginx routes from the node's table")
	if _, err := f.nodes[0].API().Drain(ctx, true); err != nil {
		t.Fatal(err)
	}
	waitStatus("/drained/0", http.StatusBadGateway, "502 once the ring is empty")
	for i := range requests {
		if r, err := f.get(host, fmt.Sprintf("/drained/%d", i+1)); err != nil || r.Status != http.StatusBadGateway {
			t.Errorf("GET /drained/%d with the ring empty: %+v %v, want 502", i+1, r, err)
		}
	}
	log = f.nginx.ErrorLog()
	if n := strings.Count(log, `has no live instance`); n != 1 {
		t.Errorf("the empty ring was logged %d times, want once:\n%s", n, log)
	}
	if strings.Contains(log, "no live upstreams") || strings.Contains(log, "no route in service") {
		t.Errorf("nginx logged each request without a route:\n%s", log)
	}
}

// A table file the workers cannot read is logged once and not read again
// until it changes; a chmod that makes it readable is such a change (its
// ctime), and nginx then routes from it. The file is a copy that no node
// touches, so that only the chmod changes it.
func TestModuleUnreadableTableReadAfterChmod(t *testing.T) {
	ctx := testContext(t, 90*time.Second)
	f, so, tables, static := newNoTableFixture(t, ctx)
	var raw []byte
	err := cluster.Poll(ctx, 20*time.Millisecond, "the node writes its table", func() (bool, string) {
		var err error
		raw, err = os.ReadFile(filepath.Join(tables, "web.table"))
		return err == nil, fmt.Sprint(err)
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(static, "web.table")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0); err != nil {
		t.Fatal(err)
	}
	f.nginx = startNginx(t, "module.conf", map[string]string{"MODULE": so, "RINGMAN_TABLES": static})
	r, err := f.get(host, "/unreadable")
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusServiceUnavailable {
		t.Skipf("nginx's workers read a file of mode 0 (do they run as root?): %+v", r)
	}
	if !f.logContains(fmt.Sprintf(`cannot open table "%s"`, path)) {
		t.Errorf("nginx's error log does not say it cannot open %s:\n%s", path, f.nginx.ErrorLog())
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	want := f.backends[0].Name
	err = cluster.Poll(ctx, 20*time.Millisecond, "nginx routes once the file is readable", func() (bool, string) {
		r, err := f.get(host, "/readable")
		if err != nil {
			return false, err.Error()
		}
		return r.Status == http.StatusOK && r.Backend == want, fmt.Sprintf("got %+v", r)
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(f.nginx.ErrorLog(), "cannot open table"); n != 1 {
		t.Errorf("the unreadable file was logged %d times, want once:\n%s", n, f.nginx.ErrorLog())
	}
}
