package redisapi

import (
	"sync"
	"testing"
	"time"
)

func TestLogThrottle(t *testing.T) {
	type want struct {
		since, total uint64
		ok           bool
	}
	for _, tc := range []struct {
		name  string
		every time.Duration
		adds  []uint64
		want  []want
	}{
		{"no interval: every add logs its own", 0, []uint64{1, 3, 1},
			[]want{{1, 1, true}, {3, 4, true}, {1, 5, true}}},
		{"an hour: only the first logs", time.Hour, []uint64{2, 1, 1},
			[]want{{2, 2, true}, {0, 3, false}, {0, 4, false}}},
	} {
		var th logThrottle
		th.every = tc.every
		for i, n := range tc.adds {
			since, total, ok := th.add(n)
			if got := (want{since, total, ok}); got != tc.want[i] {
				t.Errorf("%s: add #%d (%d) = %+v, want %+v", tc.name, i, n, got, tc.want[i])
			}
		}
		if got, want := th.total(), tc.want[len(tc.want)-1].total; got != want {
			t.Errorf("%s: total() = %d, want %d", tc.name, got, want)
		}
	}
}

// Concurrent adds within one interval: exactly one line, and the count
// loses nothing.
func TestLogThrottleConcurrent(t *testing.T) {
	var th logThrottle
	th.every = time.Hour
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		lines int
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if _, _, ok := th.add(1); ok {
					mu.Lock()
					lines++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if lines != 1 || th.total() != 800 {
		t.Errorf("%d lines, total %d; want 1 line, total 800", lines, th.total())
	}
}
