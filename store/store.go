// Package store owns ringman's one data file (SPEC §6): a bbolt database in
// the data dir that holds what must survive a restart. Other packages get
// their own buckets; this package makes opening it safe: the data dir is
// private, a second process fails at once instead of waiting on the lock,
// and a file that cannot be read stops start-up without being touched.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// Store is the open data file.
type Store struct {
	db   *bolt.DB
	path string
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
	if err := checkReadable(path); err != nil {
		return nil, err
	}
	db, err := openBolt(path)
	switch {
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
		_, err := tx.CreateBucketIfNotExists(bucketMeta)
		return err
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
	return bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
}

// checkReadable refuses an existing empty file, which bbolt would otherwise
// initialise (write to) as a new database.
func checkReadable(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open data file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("open data file: %w", err)
	}
	if st.Size() == 0 {
		return fmt.Errorf("data file %s is empty; move it away to start fresh (the file was left untouched)", path)
	}
	return nil
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
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyPeers, raw)
	})
	if err != nil {
		return fmt.Errorf("save known peers: %w", err)
	}
	return nil
}
