package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"ringman/httpapi"
	"ringman/tablefile"
	"ringman/test/cluster"
)

// pollFor is cluster.Poll with a timeout, failing t when cond is not reached.
func pollFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := cluster.Poll(ctx, 20*time.Millisecond, what, cond); err != nil {
		t.Fatal(err)
	}
}

// readTable decodes service's file in dir.
func readTable(dir, service string) (*tablefile.Table, error) {
	buf, err := os.ReadFile(tablefile.Path(dir, service))
	if err != nil {
		return nil, err
	}
	return tablefile.Decode(buf)
}

// TestServeWritesTableFiles runs a node with --table-dir and checks that it
// writes a file per service (the default one, a --db one, one with a ring;
// none for a name that is not a safe file name), that each equals what the
// node answers (RING.TABLE's epoch, RING.LOOKUP's candidates), and that a
// node joining, an override set and the node leaving each rewrite them.
func TestServeWritesTableFiles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "missing", "tables") // created by serve
	a := startServe(t, "--name", "a", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--redis-addr", "127.0.0.1:0",
		"--service", "web=10.0.0.1:80", "--service", "../evil=10.0.0.9:1", "--service", "img=10.0.0.7:70", "--db", "1=thumbs",
		"--table-dir", dir)
	rdb := redis.NewClient(&redis.Options{Addr: a.respAddr(t)})
	defer rdb.Close()
	api, err := httpapi.NewClient(a.apiAddr(t), "")
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{"", "/", "Shop.Example.COM:8080/x", "shop.example.com./y", "a.b.example.com/z", "nul\x00/x"}
	for i := range 300 {
		keys = append(keys, fmt.Sprintf("h%d.example.org/item/%d", i%7, i))
	}

	// matches reports whether service's file is the node's current table.
	matches := func(service string, instances int) (bool, string) {
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		tb, err := cluster.WaitTableFile(short, rdb, dir, service)
		if err != nil {
			return false, err.Error()
		}
		if tb.N != instances {
			return false, fmt.Sprintf("%s: %d instances in the file, want %d", service, tb.N, instances)
		}
		for _, key := range keys {
			want, err := rdb.Do(ctx, "RING.LOOKUP", key, 3, service).StringSlice()
			if err != nil && !errors.Is(err, redis.Nil) {
				return false, fmt.Sprintf("RING.LOOKUP %q: %v", key, err)
			}
			if got, _ := tb.Lookup([]byte(key), 3); !slices.Equal(got, want) {
				return false, fmt.Sprintf("%s: key %q: the file answers %q, RING.LOOKUP %q", service, key, got, want)
			}
		}
		return true, ""
	}
	epochOf := func(service string) uint64 {
		tb, err := readTable(dir, service)
		if err != nil {
			t.Fatal(err)
		}
		return tb.Epoch
	}

	pollFor(t, 20*time.Second, "first tables", func() (bool, string) {
		for service, n := range map[string]int{"web": 1, "img": 1, "thumbs": 0} {
			if ok, why := matches(service, n); !ok {
				return false, why
			}
		}
		return true, ""
	})
	for path, mode := range map[string]os.FileMode{dir: os.ModeDir | 0o755, tablefile.Path(dir, "web"): 0o644, tablefile.Path(dir, "thumbs"): 0o644} {
		if fi, err := os.Stat(path); err != nil || fi.Mode() != mode {
			t.Errorf("%s: %v, %v; want mode %v", path, fi.Mode(), err, mode)
		}
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"img.table", "thumbs.table", "web.table"}; !slices.Equal(names, want) {
		t.Errorf("table dir holds %q, want %q (no temporary file, nothing for ../evil)", names, want)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "evil.table")); err == nil {
		t.Error("service ../evil wrote a file outside the table dir")
	}
	pollFor(t, 5*time.Second, "a log line about ../evil", func() (bool, string) {
		n := strings.Count(a.errOut.String(), "cannot name a table file")
		return n == 1, fmt.Sprintf("%d lines", n)
	})
	web, thumbs := epochOf("web"), epochOf("thumbs")

	// A node joins: the web ring has two instances.
	b := startServe(t, "--name", "b", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--redis-addr", "127.0.0.1:0",
		"--service", "web=10.0.0.2:80", "--join", a.gossipAddr(t))
	pollFor(t, 20*time.Second, "web's table after b joined", func() (bool, string) { return matches("web", 2) })
	if epochOf("web") == web {
		t.Fatal("web's table changed, its epoch did not")
	}
	if epochOf("thumbs") != thumbs {
		t.Error("thumbs' table was rewritten with another epoch, though nothing of thumbs changed")
	}
	web = epochOf("web")

	// An override (set on b: gossip brings it to a) changes every service.
	bapi, err := httpapi.NewClient(b.apiAddr(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bapi.SetHost(ctx, "*.example.com", "10.9.9.9:99"); err != nil {
		t.Fatal(err)
	}
	pollFor(t, 20*time.Second, "tables with the override", func() (bool, string) {
		for service, n := range map[string]int{"web": 2, "thumbs": 0} {
			if ok, why := matches(service, n); !ok {
				return false, why
			}
			if tb, _ := readTable(dir, service); tb.Overrides != 1 {
				return false, fmt.Sprintf("%s: %d overrides in the file", service, tb.Overrides)
			}
		}
		return true, ""
	})
	if epochOf("web") == web || epochOf("thumbs") == thumbs {
		t.Fatal("the override did not change the epochs")
	}
	if got, _ := api.Lookup(ctx, "shop.example.com/x", "thumbs", 1); got.Backend != "10.9.9.9:99" {
		t.Fatalf("the node answers %q for the override", got.Backend)
	}

	// b leaves: back to one instance.
	b.stop(t)
	pollFor(t, 20*time.Second, "web's table after b left", func() (bool, string) { return matches("web", 1) })

	s := scrapeMetrics(t, a.apiAddr(t))
	if ok := s.value(t, "ringman_table_writes_total", "result=ok"); ok < 5 {
		t.Errorf("ringman_table_writes_total{result=ok} = %v, want at least 5", ok)
	}
	if s.value(t, "ringman_table_writes_total", "result=error") != 0 {
		t.Error("write errors counted")
	}
	last := fmt.Sprintf("%016x", epochOf("web"))
	pollFor(t, 5*time.Second, "the epoch metric", func() (bool, string) {
		m := scrapeMetrics(t, a.apiAddr(t)).metric("ringman_table_epoch_info", "epoch="+last, "service=web")
		return m != nil, "no ringman_table_epoch_info{service=web,epoch=" + last + "}"
	})

	// Stopping removes nothing and writes nothing more: the drain and leave
	// that follow do not reach the files, which stay as the cluster was
	// (nginx routes on while ringman restarts).
	last = fmt.Sprintf("%016x", epochOf("web"))
	a.stop(t)
	tb, err := readTable(dir, "web")
	if err != nil {
		t.Fatalf("after the node stopped: %v", err)
	}
	if tb.N != 1 || fmt.Sprintf("%016x", tb.Epoch) != last {
		t.Errorf("after the node stopped, web's table has %d instances, epoch %016x; want the last one, %s with 1 instance", tb.N, tb.Epoch, last)
	}
}

// TestTableDirUsage checks that a --table-dir that cannot be one is a
// usage error before anything is created.
func TestTableDirUsage(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(tmp, "data")
	for _, dir := range []string{file, filepath.Join(file, "sub")} {
		code, out, errOut := runCLI("serve", "--data-dir", data, "--bind", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
			"--redis-addr", "127.0.0.1:0", "--table-dir", dir)
		if code != 2 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "--table-dir") || !strings.Contains(errOut, "not a directory") {
			t.Errorf("--table-dir %s: exit %d, stdout %q, stderr %q; want exit 2 and one line", dir, code, out, errOut)
		}
	}
	t.Setenv("RINGMAN_TABLE_DIR", file)
	if code, _, errOut := runCLI("serve", "--data-dir", data); code != 2 || !strings.Contains(errOut, "--table-dir") {
		t.Errorf("RINGMAN_TABLE_DIR=%s: exit %d, %q", file, code, errOut)
	}
	if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the data dir was created (%v) though the flags were refused", err)
	}
}
