package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"ringman/httpapi"
)

func TestHostsSetListRm(t *testing.T) {
	n := startTestNode(t, "tok")
	auth := []string{"--addr", n.addr, "--api-token", "tok"}
	cli := func(args ...string) (int, string, string) { return runCLI(append(args, auth...)...) }

	code, out, errOut := cli("hosts", "list")
	if code != 0 || out != "" {
		t.Errorf("list on an empty table: exit %d, %q (stderr %q); want 0 and nothing", code, out, errOut)
	}
	code, out, errOut = cli("hosts", "set", "Some.Host.COM", "localhost:3000")
	if code != 0 || out != "some.host.com -> localhost:3000\n" {
		t.Errorf("set: exit %d, %q (stderr %q)", code, out, errOut)
	}
	code, out, _ = cli("hosts", "set", "*.example.com", "10.0.0.5:3000")
	if code != 0 || out != "*.example.com -> 10.0.0.5:3000\n" {
		t.Errorf("set wildcard: exit %d, %q", code, out)
	}
	if e, ok := n.table.Get("some.host.com"); !ok || e.Backend != "localhost:3000" {
		t.Fatalf("after set, the table has %+v, %v", e, ok)
	}
	for key, want := range map[string]string{
		"some.host.com/x":       "localhost:3000\toverride\n",
		"Www.Example.com:8080/": "10.0.0.5:3000\toverride\n",
	} {
		if code, out, _ := cli("lookup", key, "-n", "3"); code != 0 || out != want {
			t.Errorf("lookup %s after set: exit %d, %q; want %q", key, code, out, want)
		}
	}

	code, out, _ = cli("hosts", "list")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if code != 0 || len(lines) != 3 {
		t.Fatalf("list: exit %d, %q; want a header and 2 lines", code, out)
	}
	rows := [][]string{{"HOST", "BACKEND", "UPDATED", "NODE"}, {"*.example.com", "10.0.0.5:3000", "", "cli-test"}, {"some.host.com", "localhost:3000", "", "cli-test"}}
	stamp := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)
	col := -1
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) != 4 || f[0] != rows[i][0] || f[1] != rows[i][1] || f[3] != rows[i][3] || (i > 0 && !stamp.MatchString(f[2])) {
			t.Errorf("list line %d = %q, want fields like %q", i, l, rows[i])
		}
		// Aligned columns: the backend starts at the same offset on every line.
		if at := strings.Index(l, f[1]); col >= 0 && at != col {
			t.Errorf("columns not aligned: backend at offset %d and %d", col, at)
		} else {
			col = at
		}
	}

	code, out, _ = cli("hosts", "list", "--format", "json")
	var hs []httpapi.Override
	if code != 0 || json.Unmarshal([]byte(out), &hs) != nil || len(hs) != 2 || hs[1].Host != "some.host.com" || hs[1].Backend != "localhost:3000" || hs[1].Node != "cli-test" {
		t.Errorf("list --format json: exit %d, %q", code, out)
	}

	code, out, errOut = cli("hosts", "rm", "SOME.host.com")
	if code != 0 || out != "removed some.host.com (was localhost:3000)\n" {
		t.Errorf("rm: exit %d, %q (stderr %q)", code, out, errOut)
	}
	code, out, errOut = cli("hosts", "rm", "some.host.com")
	if code != 1 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, `no override for host "some.host.com"`) {
		t.Errorf("rm of a missing host: exit %d, stdout %q, stderr %q; want exit 1 and one line", code, out, errOut)
	}
	if n.table.Len() != 1 {
		t.Errorf("%d overrides left, want 1", n.table.Len())
	}
}

func TestHostsErrors(t *testing.T) {
	n := startTestNode(t, "tok")
	for _, tc := range []struct {
		args    []string
		code    int
		errPart string
	}{
		{[]string{"hosts", "set", "a..b", "10.0.0.5:3000", "--api-token", "tok"}, 2, "host: "},
		{[]string{"hosts", "set", "a.com", "10.0.0.5:0", "--api-token", "tok"}, 2, "backend: "},
		{[]string{"hosts", "rm", "../x", "--api-token", "tok"}, 2, "host: "},
		{[]string{"hosts", "set", "a.com", "10.0.0.5:3000"}, 1, "token"},
		{[]string{"hosts", "rm", "a.com"}, 1, "token"},
	} {
		code, out, errOut := runCLI(append(tc.args, "--addr", n.addr)...)
		if code != tc.code || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tc.errPart) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit %d and one line with %q", tc.args, code, out, errOut, tc.code, tc.errPart)
		}
	}
	if n.table.Len() != 0 {
		t.Errorf("failed commands stored %d overrides", n.table.Len())
	}
	code, _, errOut := runCLI("hosts", "list", "--addr", "127.0.0.1:1")
	if code != 1 || !strings.Contains(errOut, "cannot reach ringman") {
		t.Errorf("list of an unreachable node: exit %d, %q", code, errOut)
	}
	code, out, _ := runCLI("hosts")
	if code != 0 || !strings.Contains(out, "set") || !strings.Contains(out, "rm") {
		t.Errorf("hosts alone: exit %d, %q; want the help", code, out)
	}
}
