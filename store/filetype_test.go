package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// openWithin runs Open(dir) and fails the test when it has not returned
// within d (a FIFO used to block it forever).
func openWithin(t *testing.T, dir string, d time.Duration) (*Store, error) {
	t.Helper()
	type result struct {
		s   *Store
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := Open(dir)
		done <- result{s, err}
	}()
	select {
	case r := <-done:
		return r.s, r.err
	case <-time.After(d):
		// Unblock a reader stuck on a FIFO so that the goroutine ends.
		if f, err := os.OpenFile(filepath.Join(dir, FileName), os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
		t.Fatalf("Open(%s) did not return within %v", dir, d)
		return nil, nil
	}
}

func TestNotARegularFileIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(t *testing.T, path string) // puts something at the data file's path
		want string                          // in the error
	}{
		{"fifo", func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Skipf("mkfifo: %v", err)
			}
		}, "named pipe"},
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "directory"},
		{"dangling symlink", func(t *testing.T, path string) {
			if err := os.Symlink(filepath.Join(filepath.Dir(path), "elsewhere.db"), path); err != nil {
				t.Fatal(err)
			}
		}, "does not exist"},
		{"symlink to a device", func(t *testing.T, path string) {
			if err := os.Symlink(os.DevNull, path); err != nil {
				t.Fatal(err)
			}
		}, "device"},
		{"device", func(t *testing.T, path string) {
			var st syscall.Stat_t
			if err := syscall.Stat(os.DevNull, &st); err != nil {
				t.Skip(err)
			}
			if err := syscall.Mknod(path, syscall.S_IFCHR|0o600, int(st.Rdev)); err != nil {
				t.Skipf("mknod (needs privileges): %v", err)
			}
		}, "device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			tc.make(t, path)
			before := listDir(t, dir)
			s, err := openWithin(t, dir, 10*time.Second)
			if err == nil {
				s.Close()
				t.Fatalf("Open succeeded with %s at the data file's path", tc.name)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.want) || !strings.Contains(msg, "not a regular file") || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line saying it is not a regular file (%s)", msg, tc.want)
			}
			if after := listDir(t, dir); after != before {
				t.Errorf("the data dir changed: %s, was %s", after, before)
			}
		})
	}
}

// A symlink to a regular file is followed: the data file may live on
// another volume.
func TestSymlinkToDataFileIsFollowed(t *testing.T) {
	dir, elsewhere := t.TempDir(), t.TempDir()
	s, err := Open(elsewhere)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SavePeers([]string{"10.0.0.1:7946"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.Symlink(filepath.Join(elsewhere, FileName), filepath.Join(dir, FileName)); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if peers, err := s.LoadPeers(); err != nil || len(peers) != 1 {
		t.Errorf("through the symlink: peers %v, err %v; want the saved one", peers, err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, FileName)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symlink was replaced: %v, %v", fi, err)
	}
}

// listDir describes every entry of dir: name, type and size.
func listDir(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range entries {
		fi, err := os.Lstat(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sub := ""
		if fi.IsDir() {
			sub = listDir(t, filepath.Join(dir, e.Name()))
		}
		fmt.Fprintf(&b, "%s %v %d [%s]; ", e.Name(), fi.Mode(), fi.Size(), sub)
	}
	return b.String()
}
