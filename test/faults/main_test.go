// Package faults runs ringman through crashes, hangs, partitions, churn and
// packet loss, and checks that it keeps answering correctly.
//
// Every node is a real `ringman serve` process in its own network namespace
// with its own address, joined to the others by a veth pair into a bridge in
// a namespace the test owns; links are cut or degraded with nftables rules
// inside the namespaces (see lab_test.go). A load generator asks every node all the
// time and checks each answer against what the test knows of the cluster
// (load_test.go). TestFaults prints one row per scenario and, with
// RINGMAN_FAULTS_REPORT=path, writes the report (docs/RELIABILITY.md).
//
// It needs root, iproute2 (`ip`) and nftables (`nft`); without them it skips
// with a message. The binary is built once per run from ./cmd/ringman; set
// RINGMAN_BIN to test a prebuilt one instead.
package faults

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

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
	// Building takes a while: not when the suite will skip anyway.
	if missing() != "" {
		return m.Run()
	}
	var cleanup func()
	var err error
	bin, buildErr, cleanup, err = cluster.BuildOnce("ringman-faults-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	defer cleanup()
	return m.Run()
}

// missing says what the suite needs and does not have, or "".
func missing() string {
	if os.Geteuid() != 0 {
		return "not root: network namespaces and nftables need root (run `sudo make faults`)"
	}
	for _, tool := range []string{"ip", "nft", "nice"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("%s not found in PATH: install iproute2, nftables and coreutils (`make test-deps`)", tool)
		}
	}
	return ""
}

// requireLab skips the test when the machine cannot run the suite.
func requireLab(t *testing.T) {
	t.Helper()
	if why := missing(); why != "" {
		t.Skip("fault suite skipped: " + why)
	}
	if buildErr != nil {
		t.Fatalf("cannot build the ringman binary: %v", buildErr)
	}
}
