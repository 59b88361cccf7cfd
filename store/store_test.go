package store

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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
	if d := time.Since(start); d > time.Second {
		t.Errorf("second open took %v, want under 1s", d)
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
