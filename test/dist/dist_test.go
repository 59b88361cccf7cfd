// Package dist checks the files an operator installs from dist/: the systemd
// unit passes systemd-analyze verify, and the environment file sets only
// flags that `ringman serve` has.
package dist

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"ringman/test/cluster"
)

var bin string

func TestMain(m *testing.M) {
	b, buildErr, cleanup, err := cluster.BuildOnce("ringman-dist-bin-")
	if err != nil {
		panic(err)
	}
	if buildErr != nil {
		println("cannot build ringman:", buildErr.Error())
		os.Exit(1)
	}
	bin = b
	code := m.Run()
	cleanup()
	os.Exit(code)
}

func distFile(t *testing.T, name string) string {
	t.Helper()
	root, err := cluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "dist", "systemd", name)
}

// TestSystemdUnitVerifies runs systemd-analyze verify on ringman.service with
// ExecStart pointing at the binary under test (verify checks that it is
// executable). verify exits 0 on unknown keys and bad values and only warns,
// so any output is a failure too.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian: systemd); the unit is not verified")
	}
	unit, err := os.ReadFile(distFile(t, "ringman.service"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(unit)
	for old, repl := range map[string]string{
		"ExecStart=/usr/local/bin/ringman serve": "ExecStart=" + bin + " serve",
		"EnvironmentFile=/etc/default/ringman":   "EnvironmentFile=" + distFile(t, "ringman.env"),
	} {
		if !strings.Contains(text, old) {
			t.Fatalf("ringman.service has no %q line", old)
		}
		text = strings.Replace(text, old, repl, 1)
	}
	path := filepath.Join(t.TempDir(), "ringman.service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify ringman.service: %v\n%s", err, out)
	}
}

// TestEnvFileNamesRealFlags checks every RINGMAN_* variable in ringman.env,
// set or commented out, against `ringman serve --help`: a misspelt name
// would be silently ignored by the daemon.
func TestEnvFileNamesRealFlags(t *testing.T) {
	help, err := exec.Command(bin, "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("ringman serve --help: %v\n%s", err, help)
	}
	f, err := os.Open(distFile(t, "ringman.env"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	assign := regexp.MustCompile(`^#?(RINGMAN_[A-Z_]+)=`)
	seen := 0
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		m := assign.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		seen++
		flag := "--" + strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(m[1], "RINGMAN_")), "_", "-")
		if !strings.Contains(string(help), "      "+flag+" ") {
			t.Errorf("ringman.env:%d: %s is not a serve flag (%s)", line, m[1], flag)
		}
	}
	if seen < 10 {
		t.Fatalf("ringman.env sets only %d RINGMAN_ variables; the pattern must be wrong", seen)
	}
}
