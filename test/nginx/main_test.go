// Package nginx tests the configs and the Lua module in nginx/ with Debian's
// real nginx in front of real `ringman serve` processes, each advertising one
// real HTTP backend (a small Go server in the test that answers with its own
// name and records what it was asked).
//
// The tests skip, saying what to install, when nginx or its Lua module is
// missing (`make test-deps` installs them). The ringman binary is built once
// per run from ./cmd/ringman; set RINGMAN_BIN to test a prebuilt one.
package nginx

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"ringman/test/cluster"
)

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
	bin, buildErr, cleanup, err = cluster.BuildOnce("ringman-nginx-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "nginx tests:", err)
		return 1
	}
	defer cleanup()
	return m.Run()
}

// testContext bounds one test.
func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
