package store

import (
	"sync"
	"testing"
	"time"
)

// Each save of known peers or of the keyring reports its commit time.
func TestOnCommit(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var mu sync.Mutex
	var took []time.Duration
	s.OnCommit(func(d time.Duration) { mu.Lock(); took = append(took, d); mu.Unlock() })
	if err := s.SavePeers([]string{"10.0.0.1:7946"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveKeys([][]byte{make([]byte, 32)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadPeers(); err != nil { // a read: not reported
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(took) != 2 || took[0] <= 0 || took[1] <= 0 {
		t.Errorf("commits reported: %v; want two positive durations (peers, keyring)", took)
	}
}
