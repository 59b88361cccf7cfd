// Package e2e tests the ringman binary as an operator runs it: real
// `ringman serve` processes on loopback, the Redis protocol through a Go
// Redis client and redis-cli, the HTTP API, the CLI, signals.
//
// The binary is built once per run from ./cmd/ringman; set RINGMAN_BIN to
// test a prebuilt one instead.
package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"ringman/test/cluster"
)

// bin is the ringman binary under test; buildErr is why there is none.
var (
	bin      string
	buildErr error
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	var cleanup func()
	var err error
	bin, buildErr, cleanup, err = cluster.BuildOnce("ringman-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer cleanup()
	return m.Run()
}

// newCluster returns an empty cluster of processes that are stopped when
// the test ends; their logs are printed when it failed.
func newCluster(t *testing.T) *cluster.Cluster {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("cannot build the ringman binary: %v", buildErr)
	}
	c := cluster.New(bin, t.TempDir())
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("node logs:\n%s", c.Logs())
		}
	})
	return c
}

// testContext bounds one test.
func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
