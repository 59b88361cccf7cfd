package tablefile_test

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ringman/tablefile"
)

// logBuffer collects a logger's lines for a test while a writer runs.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

func poll(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v: %s", what, timeout, why)
		}
		<-tick.C
	}
}

func decodeFile(path string) (*tablefile.Table, error) {
	buf, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return tablefile.Decode(buf)
}

// TestWriterErrorsAndNames drives Pass by hand: a failing write is logged
// once per streak, counted each time, and retried until it succeeds; a
// name that cannot be a file gets one log line and no file.
func TestWriterErrorsAndNames(t *testing.T) {
	f := newFixture(t)
	f.update(t, "10.0.0.1:80")
	dir := filepath.Join(t.TempDir(), "a", "b")
	logs := &logBuffer{}
	var ok, failed atomic.Int64
	w, err := tablefile.NewWriter(tablefile.WriterConfig{Dir: dir, Router: f.r, Services: []string{"web", "../up", ".hidden", "sp ace"},
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnWrite: func(service string, epoch uint64, err error) {
			if err != nil {
				failed.Add(1)
			} else {
				ok.Add(1)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode() != os.ModeDir|0o755 {
		t.Fatalf("table dir: %v %v, want a directory 0755", fi.Mode(), err)
	}
	// A directory where the temporary file goes: every write fails.
	blocker := filepath.Join(dir, ".web.table.tmp")
	if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		w.Pass()
	}
	if n := logs.count("table file not written"); n != 1 || failed.Load() != 3 || ok.Load() != 0 {
		t.Fatalf("3 failing passes: %d log lines, %d errors, %d writes; want 1, 3, 0:\n%s", n, failed.Load(), ok.Load(), logs.b.String())
	}
	if n := logs.count("cannot name a table file"); n != 3 {
		t.Errorf("%d log lines about the 3 unsafe names, want 3 (one each, once)", n)
	}
	if err := os.RemoveAll(blocker); err != nil {
		t.Fatal(err)
	}
	w.Pass()
	w.Pass() // nothing changed: no write
	if ok.Load() != 1 || logs.count("table file written again") != 1 {
		t.Fatalf("after the fix: %d writes, log:\n%s", ok.Load(), logs.b.String())
	}
	if _, err := decodeFile(tablefile.Path(dir, "web")); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("table dir holds %d entries, want web.table alone", len(entries))
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "up.table")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("../up wrote outside the dir: %v", err)
	}
}

// TestWriterRun checks the goroutine: nothing is written before Ready, a
// ring change is written at once on Changed (the tick is an hour), a
// service that gets a ring gets a file, and Close removes nothing.
func TestWriterRun(t *testing.T) {
	f := newFixture(t)
	f.update(t, "10.0.0.1:80")
	dir := t.TempDir()
	var ready, asked atomic.Bool
	w, err := tablefile.NewWriter(tablefile.WriterConfig{Dir: dir, Router: f.r, Services: []string{"web"}, Interval: time.Hour,
		Ready: func() bool { asked.Store(true); return ready.Load() }})
	if err != nil {
		t.Fatal(err)
	}
	go w.Run()
	defer w.Close()
	poll(t, 5*time.Second, "Ready asked", func() (bool, string) { return asked.Load(), "" })
	if _, err := os.Stat(tablefile.Path(dir, "web")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("written before ready: %v", err)
	}
	ready.Store(true)
	w.Changed()
	poll(t, 5*time.Second, "web written once ready", func() (bool, string) {
		tb, err := decodeFile(tablefile.Path(dir, "web"))
		if err != nil {
			return false, err.Error()
		}
		return tb.N == 1, "instances"
	})
	if _, err := f.r.Update(map[string][]string{"web": {"10.0.0.1:80", "10.0.0.2:80"}, "img": {"10.0.1.1:80"}}); err != nil {
		t.Fatal(err)
	}
	w.Changed()
	poll(t, 5*time.Second, "the ring change written", func() (bool, string) {
		web, err := decodeFile(tablefile.Path(dir, "web"))
		if err != nil {
			return false, err.Error()
		}
		img, err := decodeFile(tablefile.Path(dir, "img"))
		if err != nil {
			return false, err.Error()
		}
		return web.N == 2 && img.N == 1, "instances"
	})
	// img loses its ring: its file stays written, and says so.
	if _, err := f.r.Update(map[string][]string{"web": {"10.0.0.1:80"}}); err != nil {
		t.Fatal(err)
	}
	w.Changed()
	poll(t, 5*time.Second, "img's last instance gone", func() (bool, string) {
		img, err := decodeFile(tablefile.Path(dir, "img"))
		if err != nil {
			return false, err.Error()
		}
		return img.N == 0 && img.Partitions == 0, "instances"
	})
	w.Close()
	w.Close() // twice is fine
	for _, s := range []string{"web", "img"} {
		if _, err := decodeFile(tablefile.Path(dir, s)); err != nil {
			t.Errorf("after Close: %v", err)
		}
	}
}

func TestCheckDir(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "f")
	os.WriteFile(file, nil, 0o644)
	for dir, want := range map[string]string{"": "empty", file: "not a directory", filepath.Join(file, "x", "y"): "not a directory"} {
		if err := tablefile.CheckDir(dir); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckDir(%q) = %v, want %q", dir, err, want)
		}
	}
	for _, dir := range []string{tmp, filepath.Join(tmp, "new", "deeper")} {
		if err := tablefile.CheckDir(dir); err != nil {
			t.Errorf("CheckDir(%q) = %v", dir, err)
		}
	}
	if _, err := os.Stat(filepath.Join(tmp, "new")); !errors.Is(err, os.ErrNotExist) {
		t.Error("CheckDir created something")
	}
}

func TestSafeName(t *testing.T) {
	for name, want := range map[string]bool{"web": true, "Web-1.a_b": true, "": false, ".x": false, "..": false,
		"../x": false, "a/b": false, "a b": false, "ü": false, "a\x00": false, "x.": true} {
		if got := tablefile.SafeName(name); got != want {
			t.Errorf("SafeName(%q) = %v, want %v", name, got, want)
		}
	}
}
