package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runServeWithin runs `ringman serve` in-process with a data dir that does
// not exist yet, stopping it after d if it starts; it returns the exit
// code, stderr, and whether the data dir exists afterwards.
func runServeWithin(t *testing.T, d time.Duration, args ...string) (code int, errOut string, dirLeft bool) {
	t.Helper()
	dataDir := filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out, errBuf bytes.Buffer
	base := []string{"serve", "--data-dir", dataDir, "--bind", "127.0.0.1:0", "--redis-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--profile", "fast", "--leave-timeout", "1s"}
	code = runContext(ctx, append(base, args...), &out, &errBuf)
	_, err := os.Stat(dataDir)
	return code, errBuf.String(), err == nil
}

func TestServeRejectsBadAddressesBeforeCreatingAnything(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the error line
	}{
		{[]string{"--name", "evil\nlevel=ERROR msg=forged"}, "--name"},
		{[]string{"--name", strings.Repeat("n", 300)}, "--name"},
		{[]string{"--bind", "127.0.0.1:99999"}, "--bind"},
		{[]string{"--bind", "127.0.0.1"}, "--bind"},
		{[]string{"--bind", ""}, "--bind"},
		{[]string{"--bind", "no-such-host.invalid:7946"}, "no-such-host.invalid"},
		{[]string{"--advertise", "10.0.0.1:99999"}, "--advertise"},
		{[]string{"--advertise", "10.0.0.1"}, "--advertise"},
		{[]string{"--advertise", "0.0.0.0:7946"}, "--advertise"},
		{[]string{"--redis-addr", ":99999"}, "--redis-addr"},
		{[]string{"--redis-addr", "unix:"}, "--redis-addr"},
		{[]string{"--redis-addr", "localhost"}, "--redis-addr"},
		{[]string{"--redis-addr", ""}, "--redis-addr"},
		{[]string{"--http-addr", ":99999"}, "--http-addr"},
		{[]string{"--http-addr", "127.0.0.1"}, "--http-addr"},
		{[]string{"--http-addr", "unix:/tmp/x.sock"}, "--http-addr"},
		{[]string{"--join", "127.0.0.1"}, "--join 127.0.0.1: no port (the gossip port is 7946 by default: 127.0.0.1:7946)"},
		{[]string{"--join", "seed.example.com"}, "seed.example.com:7946"},
		{[]string{"--join", "::1"}, "[::1]:7946"},
		{[]string{"--join", "127.0.0.1:0"}, "--join"},
		{[]string{"--join", "127.0.0.1:7946,127.0.0.1:99999"}, "--join 127.0.0.1:99999"},
		{[]string{"--check", "ftp://127.0.0.1/health"}, "--check"},
		{[]string{"--check", "127.0.0.1:8080/health"}, "--check"},
		{[]string{"--check-status", "200-700"}, "--check-status 200-700: want a status or a range of statuses within 100-599"},
		{[]string{"--check-rise", "-1"}, "--check-rise must be 1 to 100"},
		{[]string{"--service", "id=web-a"}, "id= is an instance attribute: put it after an instance"},
		{[]string{"--service", "web=10.0.0.5:8080,weight=200"}, "weight \"200\": want 0 to 100"},
		{[]string{"--service", "web=10.0.0.5:8080,zone=b"}, `--service "zone=b": instance "b": want host:port: address b: missing port in address (the attributes after an instance are id= and weight=)`},
		{[]string{"--profile", "quick"}, "--profile"},
		{[]string{"--profile", ""}, "--profile"},
		{[]string{"--encrypt", ""}, "--encrypt"},
	} {
		t.Run(strings.Join(tc.args, "="), func(t *testing.T) {
			t.Parallel()
			code, errOut, dirLeft := runServeWithin(t, 10*time.Second, tc.args...)
			if code != exitUsage || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tc.want) {
				t.Errorf("serve %q: exit %d, stderr %q; want exit 2 and one line with %q", tc.args, code, errOut, tc.want)
			}
			if dirLeft {
				t.Errorf("serve %q left the data dir behind", tc.args)
			}
		})
	}
}

// RINGMAN_ENCRYPT= is what a script gives when the key file is missing.
func TestServeRejectsEmptyEncryptFromEnvironment(t *testing.T) {
	t.Setenv("RINGMAN_ENCRYPT", "")
	code, errOut, dirLeft := runServeWithin(t, 10*time.Second)
	if code != exitUsage || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "--encrypt") || dirLeft {
		t.Errorf("RINGMAN_ENCRYPT='': exit %d, stderr %q, data dir left: %v; want exit 2, one line, no dir", code, errOut, dirLeft)
	}
}

// The --profile help is built from discovery's profiles; it reads as it
// did when it was written by hand.
func TestProfileUsage(t *testing.T) {
	if got, want := profileUsage(), "gossip timing profile: lan, wan or fast (one datacenter up to 50 nodes, ~1 s failure detection)"; got != want {
		t.Errorf("profileUsage() = %q, want %q", got, want)
	}
}
