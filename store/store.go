// Package store owns ringman's one data file: a bbolt database in
// the data dir that holds what must survive a restart. Other packages get
// their own buckets; this package makes opening it safe: the data dir is
// private, a second process fails at once instead of waiting on the lock,
// and a file that cannot be read stops start-up without being touched.
package store

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	boltErrors "go.etcd.io/bbolt/errors"
)

// FileName is the database file inside the data dir.
const FileName = "ringman.db"

// lockTimeout bounds the wait for the file lock held by another process.
const lockTimeout = 100 * time.Millisecond

var bucketMeta = []byte("meta")

var keyPeers = []byte("peers")

// The gossip keyring: "keys" holds the keys, primary first, as a JSON list
// of base64 strings (serf's keyring file format); "removed" holds the
// SHA-256 digests (hex) of the last maxRemovedKeys keys removed from it.
var (
	bucketKeyring  = []byte("keyring")
	keyKeys        = []byte("keys")
	keyRemovedKeys = []byte("removed")
)

const maxRemovedKeys = 64

// Store is the open data file.
type Store struct {
	db       *bolt.DB
	path     string
	onCommit atomic.Pointer[func(took time.Duration)]
}

// Open creates dir (0700) if needed and opens its data file (0600).
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("data dir is empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	path := filepath.Join(dir, FileName)
	db, err := openBolt(path)
	var refused refusedError
	switch {
	case errors.As(err, &refused):
		return nil, refused.err
	case errors.Is(err, boltErrors.ErrTimeout):
		return nil, fmt.Errorf("data dir %s is in use by another ringman process (could not lock %s)", dir, path)
	case err != nil:
		return nil, fmt.Errorf("data file %s is unreadable or corrupt: %v (the file was left untouched)", path, err)
	}
	if err := check(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("data file %s is corrupt: %v (the file was left untouched)", path, err)
	}
	s := &Store{db: db, path: path}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketKeyring} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise data file %s: %w", path, err)
	}
	return s, nil
}

// openBolt opens path, turning bbolt's panics on a damaged file (it loads
// the freelist while opening) into errors.
func openBolt(path string) (db *bolt.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, fmt.Errorf("damaged page: %v", p)
		}
	}()
	return bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout, OpenFile: openDataFile})
}

// refusedError is openDataFile's refusal, passed through bbolt as it is.
type refusedError struct{ err error }

func (e refusedError) Error() string { return e.err.Error() }

// openDataFile opens the data file for bbolt (which asks for O_CREATE),
// refusing, with nothing created or written, anything but a regular file
// with content or a missing file: a FIFO would block the open forever, a
// device or directory is no database, an existing empty file would be
// initialised as a new database, and a dangling symlink would create a
// fresh one at its target. A symlink to a regular file is followed, so
// that the file can live on another volume. The checks are made on the
// opened descriptor, so the file cannot be swapped between check and use.
func openDataFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	// O_NONBLOCK: opening a FIFO must not wait for a writer.
	f, err := os.OpenFile(path, flag&^os.O_CREATE|syscall.O_NONBLOCK, perm)
	created := false
	if errors.Is(err, os.ErrNotExist) && flag&os.O_CREATE != 0 {
		// O_EXCL does not follow a (dangling) symlink: it fails instead.
		f, err = os.OpenFile(path, flag|os.O_EXCL|syscall.O_NONBLOCK, perm)
		created = err == nil
	}
	if err != nil {
		if what := describe(path); what != "a regular file" && what != "" {
			return nil, refusedError{notRegular(path, what)}
		}
		return nil, refusedError{fmt.Errorf("open data file %s: %w (nothing was created or changed)", path, err)}
	}
	st, err := f.Stat()
	switch {
	case err != nil:
		f.Close()
		return nil, refusedError{fmt.Errorf("open data file %s: %w (nothing was created or changed)", path, err)}
	case !st.Mode().IsRegular():
		f.Close()
		return nil, refusedError{notRegular(path, describe(path))}
	case st.Size() == 0 && !created:
		f.Close()
		return nil, refusedError{fmt.Errorf("data file %s is empty; move it away to start fresh (the file was left untouched)", path)}
	}
	return f, nil
}

func notRegular(path, what string) error {
	return fmt.Errorf("data file %s is %s: not a regular file; move it away or use another data dir (nothing was created or changed)", path, what)
}

// describe says what is at path, following a symlink, for an error.
func describe(path string) string {
	fi, err := os.Lstat(path)
	if err != nil {
		return ""
	}
	if fi.Mode()&os.ModeSymlink == 0 {
		return fileKind(fi.Mode())
	}
	target, _ := os.Readlink(path)
	ti, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Sprintf("a symlink to %s, which does not exist", target)
	}
	if err != nil {
		return fmt.Sprintf("a symlink to %s, which cannot be read (%v)", target, err)
	}
	return fmt.Sprintf("a symlink to %s, which is %s", target, fileKind(ti.Mode()))
}

func fileKind(m os.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	}
	return "of type " + m.Type().String()
}

// check walks every page once: bbolt trusts its pages and can panic on a
// damaged one later, so damage must be found here, before anything is written.
func check(db *bolt.DB) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	return db.View(func(tx *bolt.Tx) error {
		var first error
		for e := range tx.Check() {
			if first == nil {
				first = e
			}
		}
		return first
	})
}

// Path is the data file's path.
func (s *Store) Path() string { return s.path }

// DB gives other packages their own buckets in the same file.
func (s *Store) DB() *bolt.DB { return s.db }

// OnCommit makes fn receive the duration of each of this package's write
// transactions (known peers, the keyring), fsync included, from then on.
// It is called after the commit and must not block. Other packages time
// their own transactions on DB (hostmap.Options.OnCommit).
func (s *Store) OnCommit(fn func(took time.Duration)) { s.onCommit.Store(&fn) }

// update runs fn in a write transaction and reports its duration.
func (s *Store) update(fn func(*bolt.Tx) error) error {
	start := time.Now()
	err := s.db.Update(fn)
	if hook := s.onCommit.Load(); hook != nil && *hook != nil {
		(*hook)(time.Since(start))
	}
	return err
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// LoadPeers returns the gossip addresses of peers known at the last save.
func (s *Store) LoadPeers() ([]string, error) {
	var peers []string
	err := s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketMeta).Get(keyPeers)
		if raw == nil {
			return nil
		}
		return json.Unmarshal(raw, &peers)
	})
	if err != nil {
		return nil, fmt.Errorf("read known peers: %w", err)
	}
	return peers, nil
}

// SavePeers replaces the known peers.
func (s *Store) SavePeers(addrs []string) error {
	raw, err := json.Marshal(addrs)
	if err != nil {
		return err
	}
	err = s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyPeers, raw)
	})
	if err != nil {
		return fmt.Errorf("save known peers: %w", err)
	}
	return nil
}

// LoadKeys returns the saved gossip keyring, primary first, or nil when
// none was saved. A saved keyring that cannot be read is an error: the node
// must not start with other keys than the cluster's.
func (s *Store) LoadKeys() ([][]byte, error) {
	var raw []byte
	_ = s.db.View(func(tx *bolt.Tx) error {
		raw = slices.Clone(tx.Bucket(bucketKeyring).Get(keyKeys))
		return nil
	})
	if raw == nil {
		return nil, nil
	}
	var encoded []string
	if err := json.Unmarshal(raw, &encoded); err != nil {
		return nil, fmt.Errorf("saved gossip keyring in %s is unreadable: %v", s.path, err)
	}
	if len(encoded) == 0 {
		return nil, fmt.Errorf("saved gossip keyring in %s is empty", s.path)
	}
	keys := make([][]byte, len(encoded))
	for i, e := range encoded {
		k, err := base64.StdEncoding.DecodeString(e)
		if err == nil && len(k) != 16 && len(k) != 24 && len(k) != 32 {
			err = fmt.Errorf("%d bytes, want 16, 24 or 32", len(k))
		}
		if err != nil {
			return nil, fmt.Errorf("saved gossip keyring in %s: key %d of %d is unreadable: %v", s.path, i+1, len(encoded), err)
		}
		keys[i] = k
	}
	return keys, nil
}

// SaveKeys replaces the saved gossip keyring with keys, primary first
// (discovery.KeyStore). The saved keys that are not in keys are remembered
// as removed, by digest (see KeyRemoved); keys in it are forgotten as such.
func (s *Store) SaveKeys(keys [][]byte) error {
	if len(keys) == 0 {
		return errors.New("save gossip keyring: no keys")
	}
	encoded := make([]string, len(keys))
	for i, k := range keys {
		encoded[i] = base64.StdEncoding.EncodeToString(k)
	}
	raw, err := json.Marshal(encoded)
	if err != nil {
		return err
	}
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKeyring)
		var removed, before []string
		if v := b.Get(keyRemovedKeys); v != nil {
			_ = json.Unmarshal(v, &removed) // unreadable: start the list again
		}
		if v := b.Get(keyKeys); v != nil {
			_ = json.Unmarshal(v, &before)
		}
		for _, e := range before {
			if k, err := base64.StdEncoding.DecodeString(e); err == nil && !slices.Contains(encoded, e) {
				if d := keyDigest(k); !slices.Contains(removed, d) {
					removed = append(removed, d)
				}
			}
		}
		removed = slices.DeleteFunc(removed, func(d string) bool {
			return slices.ContainsFunc(keys, func(k []byte) bool { return keyDigest(k) == d })
		})
		if len(removed) > maxRemovedKeys {
			removed = removed[len(removed)-maxRemovedKeys:]
		}
		rawRemoved, err := json.Marshal(removed)
		if err != nil {
			return err
		}
		if err := b.Put(keyRemovedKeys, rawRemoved); err != nil {
			return err
		}
		return b.Put(keyKeys, raw)
	})
	if err != nil {
		return fmt.Errorf("save gossip keyring: %w", err)
	}
	return nil
}

// KeyRemoved reports whether key was in the saved keyring and was removed
// from it (one of the last 64 removed).
func (s *Store) KeyRemoved(key []byte) (bool, error) {
	var removed []string
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketKeyring).Get(keyRemovedKeys); v != nil {
			return json.Unmarshal(v, &removed)
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("read removed gossip keys: %w", err)
	}
	return slices.Contains(removed, keyDigest(key)), nil
}

// keyDigest identifies a removed key without keeping it.
func keyDigest(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:])
}
