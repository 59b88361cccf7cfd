package store

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestPeersSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if peers, err := s.LoadPeers(); err != nil || len(peers) != 0 {
		t.Fatalf("new store: peers %v, err %v; want none", peers, err)
	}
	want := []string{"10.0.0.1:7946", "10.0.0.2:7946"}
	if err := s.SavePeers(want); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.LoadPeers()
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("after reopen: peers %v, err %v; want %v", got, err, want)
	}
}

func TestPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for path, want := range map[string]os.FileMode{dir: 0o700, s.Path(): 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", path, got, want)
		}
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	_, err = Open(dir)
	if err == nil || !strings.Contains(err.Error(), "in use by another ringman process") {
		t.Fatalf("second open: err %v, want 'in use by another ringman process'", err)
	}
	// The lock wait is 100 ms; 5 s tells it from waiting for the lock
	// forever without depending on how loaded the machine is.
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second open took %v, want under 5s", d)
	}
}

func TestUnreadableFileIsRefusedAndUntouched(t *testing.T) {
	for name, content := range map[string][]byte{
		"empty":   {},
		"garbage": bytes.Repeat([]byte("not a database "), 1000),
		"short":   []byte{1, 2, 3},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			if s, err := Open(dir); err == nil {
				s.Close()
				t.Fatal("Open succeeded on an unreadable file")
			} else if !strings.Contains(err.Error(), "left untouched") {
				t.Errorf("error %q does not say the file was left untouched", err)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(after, content) {
				t.Error("the file was modified")
			}
		})
	}
}

func TestDamagedPageIsRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	peers := make([]string, 2000)
	for i := range peers {
		peers[i] = strings.Repeat("x", 40)
	}
	if err := s.SavePeers(peers); err != nil {
		t.Fatal(err)
	}
	s.Close()
	path := filepath.Join(dir, FileName)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Overwrite both meta pages' checksummed area: bbolt must refuse the file.
	for _, off := range []int{16 + 8, 4096 + 16 + 8} {
		copy(raw[off:off+8], []byte{0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef})
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(dir); err == nil {
		s.Close()
		t.Fatal("Open succeeded on a file with damaged meta pages")
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(after, raw) {
		t.Error("the file was modified")
	}
}

// bbolt panics while opening a file whose meta pages are fine but whose
// freelist is garbage: Open must turn that into an error, file untouched.
func TestDamagedFreelistIsRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SavePeers([]string{"10.0.0.1:7946"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	path := filepath.Join(dir, FileName)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	for off := 2 * page; off < len(raw); off++ {
		raw[off] = byte(off*7 + 3)
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(dir); err == nil {
		s.Close()
		t.Fatal("Open succeeded on a file with garbage pages")
	} else if !strings.Contains(err.Error(), "left untouched") {
		t.Errorf("error %q does not say the file was left untouched", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(after, raw) {
		t.Error("the file was modified")
	}
}

func TestKeyringSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := s.LoadKeys(); err != nil || keys != nil {
		t.Fatalf("new store: keys %v, err %v; want none", keys, err)
	}
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 16)
	if err := s.SaveKeys([][]byte{k2, k1}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	keys, err := s.LoadKeys()
	if err != nil || len(keys) != 2 || !bytes.Equal(keys[0], k2) || !bytes.Equal(keys[1], k1) {
		t.Fatalf("after reopen: keys %v, err %v; want k2 (primary), k1", keys, err)
	}
	if err := s.SaveKeys(nil); err == nil {
		t.Error("SaveKeys(nil) succeeded; a keyring has at least its primary key")
	}
}

// A key removed from the saved keyring is remembered as removed (by digest),
// until it is installed again.
func TestKeyRemovedIsRemembered(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k1, k2, k3 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{3}, 32)
	removed := func(k []byte) bool {
		t.Helper()
		r, err := s.KeyRemoved(k)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, step := range [][][]byte{{k1}, {k1, k2}, {k2, k1}, {k2}} {
		if err := s.SaveKeys(step); err != nil {
			t.Fatal(err)
		}
	}
	if !removed(k1) || removed(k2) || removed(k3) {
		t.Errorf("removed: k1 %v, k2 %v, k3 %v; want only k1", removed(k1), removed(k2), removed(k3))
	}
	if err := s.SaveKeys([][]byte{k2, k1}); err != nil {
		t.Fatal(err)
	}
	if removed(k1) {
		t.Error("k1 installed again is still listed as removed")
	}
	raw, _ := os.ReadFile(s.Path())
	if bytes.Contains(raw, []byte(keyDigest(k3))) {
		t.Error("a key never saved is in the file")
	}
}

func TestUnreadableKeyringIsAnError(t *testing.T) {
	for name, raw := range map[string]string{
		"not json":  "{",
		"empty":     "[]",
		"not b64":   `["!!"]`,
		"wrong len": `["c2hvcnQ="]`,
	} {
		t.Run(name, func(t *testing.T) {
			s, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketKeyring).Put(keyKeys, []byte(raw)) }); err != nil {
				t.Fatal(err)
			}
			keys, err := s.LoadKeys()
			if err == nil || keys != nil || !strings.Contains(err.Error(), "saved gossip keyring in "+s.Path()) {
				t.Errorf("LoadKeys of %q = %v, %v; want an error naming the file", raw, keys, err)
			}
		})
	}
}
