package discovery

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSlowStart: a node with a slow start advertises its instance at 1/10
// of its weight, then in steps up to the full weight, each step seen by
// the other node in order; an undrain starts over from the first step.
func TestSlowStart(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen []string // b's instance as a sees it, each change once
	a := startNode(t, "a", func(c *Config) {
		c.OnChange = func(live map[string][]string) {
			mu.Lock()
			defer mu.Unlock()
			for _, spec := range live["web"] {
				if strings.HasPrefix(spec, instanceOf("b")) && (len(seen) == 0 || seen[len(seen)-1] != spec) {
					seen = append(seen, spec)
				}
			}
		}
	})
	b := startNode(t, "b", func(c *Config) {
		seeds(a)(c)
		c.Services = map[string][]string{"web": {instanceOf("b") + ",weight=2"}}
		c.SlowStart = 2 * time.Second
	})
	full := instanceOf("b") + ",weight=2"
	// steps returns the ramp steps in seen from index from, and whether
	// the full weight came last.
	steps := func(from int) (got []int, done bool) {
		mu.Lock()
		defer mu.Unlock()
		for _, spec := range seen[min(from, len(seen)):] {
			in, err := ParseInstance(spec)
			if err != nil {
				t.Fatalf("a saw %q: %v", spec, err)
			}
			got = append(got, in.Step)
			done = spec == full
		}
		return got, done
	}
	rampedUp := func(from int) func() (bool, string) {
		return func() (bool, string) {
			got, done := steps(from)
			return done, fmt.Sprintf("steps seen: %v, not at full weight yet", got)
		}
	}
	waitFor(t, 20*time.Second, rampedUp(0))
	checkSteps := func(from int) {
		t.Helper()
		got, _ := steps(from)
		got = got[:len(got)-1] // the last is the full weight (step 0)
		increasing := slices.IsSortedFunc(got, func(x, y int) int { return x - y }) && len(slices.Compact(slices.Clone(got))) == len(got)
		if len(got) < 5 || got[0] != 1 || !increasing {
			t.Errorf("steps seen by a: %v; want 5 or more, from 1, increasing", got)
		}
	}
	checkSteps(0)

	mu.Lock()
	mark := len(seen)
	mu.Unlock()
	if err := b.SetDraining(true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, statusIs([]*testNode{a}, "b", StatusDraining))
	if err := b.SetDraining(false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, rampedUp(mark))
	checkSteps(mark)
}
