package tablefile

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"ringman/router"
)

// SafeName reports whether service may name a file (FORMAT.md): made of
// A-Z a-z 0-9 . _ - and not starting with '.', so that no service name
// becomes another path or a hidden (temporary) file.
func SafeName(service string) bool {
	if service == "" || service[0] == '.' {
		return false
	}
	for i := 0; i < len(service); i++ {
		c := service[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Path is the file of service in dir.
func Path(dir, service string) string { return filepath.Join(dir, service+".table") }

// CheckDir checks a table directory before anything is created: it is a
// directory this process can write, or it does not exist yet and its
// nearest existing parent is one.
func CheckDir(dir string) error {
	if dir == "" {
		return errors.New("empty path")
	}
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) && filepath.Dir(p) != p {
			continue // created by MkdirAll
		}
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", p)
		}
		if err := unix.Access(p, unix.W_OK|unix.X_OK); err != nil {
			return fmt.Errorf("%s is not writable: %w", p, err)
		}
		return nil
	}
}

// WriteFile writes e as service's file in dir, atomically: a temporary
// file in dir, fsynced, renamed over the old one, and the directory fsynced,
// so that a reader sees the old table or the new one, and a crash leaves
// one of them. Files are 0644 whatever the umask: nginx's workers run as
// another user and must read them.
func WriteFile(dir, service string, e *router.Export) error {
	if !SafeName(service) {
		return fmt.Errorf("service name %q cannot name a table file (want A-Z a-z 0-9 . _ -, not starting with '.')", service)
	}
	buf, err := Encode(e)
	if err != nil {
		return fmt.Errorf("service %s: %w", service, err)
	}
	tmp := filepath.Join(dir, "."+service+".table.tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write table file: %w", err)
	}
	_, err = f.Write(buf)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, Path(dir, service))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write table file %s: %w", Path(dir, service), err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync table directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync table directory %s: %w", dir, err)
	}
	return nil
}

// DefaultInterval is how often a Writer compares the services' epochs
// when nothing told it of a change: overrides change without telling it.
// A comparison is a cached Export per service, well under a microsecond.
const DefaultInterval = 100 * time.Millisecond

// Heartbeat is how often a Writer sets the mtime of a file it did not
// need to rewrite: the mtime tells readers that the node is alive (nginx's
// ringman_max_stale, FORMAT.md), where an unchanged file could not.
const Heartbeat = time.Second

// WriterConfig configures a Writer.
type WriterConfig struct {
	Dir    string
	Router *router.Router
	// Services lists services to write besides those with a ring (the
	// default service, the RESP dbs' services). A service once written
	// stays written: when its last instance goes its file says so, rather
	// than nginx routing to it from a file nobody updates.
	Services []string
	// Ready reports whether the rings show the cluster (the node's
	// /readyz): until it does, nothing is written, so that a restarted node
	// that has not joined yet does not replace the last good table with its
	// own partial view. Nil: ready at once.
	Ready    func() bool
	Interval time.Duration // 0: DefaultInterval
	Logger   *slog.Logger
	// OnWrite is called after each attempt to write a service's file.
	OnWrite func(service string, epoch uint64, err error)
}

// Writer keeps one table file per service in a directory up to date with
// the router's exports: it writes a service's file when its epoch moves.
type Writer struct {
	cfg     WriterConfig
	changed chan struct{}
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once

	// Owned by the run goroutine.
	services map[string]bool      // to write; false: unsafe name, logged
	written  map[string]uint64    // epoch on disk, by service
	touched  map[string]time.Time // last write or mtime update, by service
	failing  map[string]bool      // a write error was logged, not yet a success
}

// NewWriter creates cfg.Dir (0755) if it is missing and returns a writer;
// call Run to start it.
func NewWriter(cfg WriterConfig) (*Writer, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if _, err := os.Stat(cfg.Dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("table directory: %w", err)
		}
		// MkdirAll's mode is cut by the umask; nginx's workers must list it.
		if err := os.Chmod(cfg.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("table directory: %w", err)
		}
	}
	if err := CheckDir(cfg.Dir); err != nil {
		return nil, fmt.Errorf("table directory: %w", err)
	}
	w := &Writer{cfg: cfg, changed: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		services: map[string]bool{}, written: map[string]uint64{}, touched: map[string]time.Time{}, failing: map[string]bool{}}
	for _, s := range cfg.Services {
		w.services[s] = true
	}
	return w, nil
}

// Changed tells the writer that an export may have changed (a ring was
// rebuilt), so that it looks now rather than at its next tick. It never
// blocks.
func (w *Writer) Changed() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// Run writes until Close. Call it once, in its own goroutine.
func (w *Writer) Run() {
	defer close(w.done)
	tick := time.NewTicker(w.cfg.Interval)
	defer tick.Stop()
	ready := w.cfg.Ready == nil
	for {
		if !ready {
			ready = w.cfg.Ready()
		}
		if ready {
			w.Pass()
		}
		select {
		case <-w.stop:
			return
		case <-w.changed:
		case <-tick.C:
		}
	}
}

// Close stops Run and waits for it. It removes no file: nginx keeps routing
// from the last tables.
func (w *Writer) Close() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
}

// Pass writes the file of every service whose export moved since its last
// write (or whose last write failed). Run calls it; it is exported for
// tools and benchmarks, and must not run concurrently with Run.
func (w *Writer) Pass() {
	for s := range w.cfg.Router.Rings() {
		if _, ok := w.services[s]; !ok {
			w.services[s] = true
		}
	}
	for _, s := range slices.Sorted(maps.Keys(w.services)) {
		if !w.services[s] {
			continue
		}
		if !SafeName(s) {
			w.services[s] = false
			w.cfg.Logger.Warn("service name cannot name a table file; no table file for it",
				"service", s, "dir", w.cfg.Dir, "want", "A-Z a-z 0-9 . _ -, not starting with '.'")
			continue
		}
		e, err := w.cfg.Router.Export(s)
		if err == nil {
			if epoch, ok := w.written[s]; ok && epoch == e.Epoch {
				if now := time.Now(); now.Sub(w.touched[s]) >= Heartbeat {
					// A failure shows as a stale file; the next tick retries.
					if os.Chtimes(Path(w.cfg.Dir, s), now, now) == nil {
						w.touched[s] = now
					}
				}
				continue
			}
			err = WriteFile(w.cfg.Dir, s, e)
		}
		var epoch uint64
		if e != nil {
			epoch = e.Epoch
		}
		if w.cfg.OnWrite != nil {
			w.cfg.OnWrite(s, epoch, err)
		}
		if err != nil {
			if !w.failing[s] {
				w.failing[s] = true
				w.cfg.Logger.Error("table file not written; retrying", "service", s, "err", err)
			}
			continue
		}
		if w.failing[s] {
			delete(w.failing, s)
			w.cfg.Logger.Info("table file written again", "service", s, "path", Path(w.cfg.Dir, s))
		}
		w.written[s] = epoch
		w.touched[s] = time.Now()
		w.cfg.Logger.Debug("table file written", "service", s, "epoch", fmt.Sprintf("%016x", epoch))
	}
}
