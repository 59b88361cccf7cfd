package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"ringman/httpapi"
)

// A peer chooses its name, services and version, and the texts of the
// overrides and errors it sends: what it puts in them must not forge lines
// or reach the terminal as control sequences.
const (
	evilName    = "evil\nlevel=ERROR msg=\"forged\" \x1b[31mRED"
	evilPrinted = `"evil\nlevel=ERROR msg=\"forged\" \x1b[31mRED"`
)

// hostileAPI serves the real JSON shapes of a node's API, filled with what
// a hostile peer could have gossiped.
func hostileAPI(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, []httpapi.Member{
			{Name: evilName, Addr: "10.0.0.1:7946", Status: "alive", Services: map[string][]string{"web": {"10.0.0.1:80\r"}}, Version: "1.0\x1b[2J"},
			{Name: "bidi\u202eevil\x7f", Addr: "10.0.0.2:7946\x00", Status: "alive\tx", Services: map[string][]string{"we\tb": {"10.0.0.2:80"}}},
			{Name: "plain", Addr: "10.0.0.3:7946", Status: "alive", Services: map[string][]string{"web": {"10.0.0.3:80"}}},
		})
	})
	mux.HandleFunc("GET /entries.json", func(w http.ResponseWriter, r *http.Request) {
		at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		reply(w, 200, []httpapi.Override{
			{Host: "a\x1b]0;title\x07.com", Backend: "10.0.0.5:3000\n", UpdatedAt: at, Node: evilName, Version: "1"},
			{Host: "plain.com", Backend: "10.0.0.6:3000", UpdatedAt: at, Node: "n1", Version: "2"},
		})
	})
	mux.HandleFunc("POST /entries.json", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 400, httpapi.Error{Error: "invalid host \"x\x1b[31m\"\nlevel=ERROR msg=forged"})
	})
	mux.HandleFunc("DELETE /entries/", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, httpapi.Override{Host: "gone\x1b[0m.com", Backend: "10.0.0.7:1\r\n"})
	})
	mux.HandleFunc("GET /v1/keys", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, httpapi.KeyringResult{Op: "list", Nodes: 2, Answered: 1,
			Keys:   []httpapi.KeyStatus{{Key: "k\x1b[31m=", Installed: 1, Primary: 1}, {Key: "plainkey=", Installed: 1}},
			Failed: []httpapi.KeyFailure{{Node: evilName, Addr: "10.0.0.9:7946", Error: "timeout\nlevel=ERROR msg=forged"}}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// checkPrintable fails when out has a control byte other than the line
// ends, or a non-printable rune.
func checkPrintable(t *testing.T, what, out string) {
	t.Helper()
	for _, r := range out {
		if r != '\n' && (r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u202e' || r == '\ufffd') {
			t.Errorf("%s printed the non-printable %U unescaped:\n%s", what, r, out)
			return
		}
	}
}

// checkAligned fails unless each line has the value of its row at the same offset.
func checkAligned(t *testing.T, what string, lines, values []string) {
	t.Helper()
	col := -1
	for i, l := range lines {
		at := strings.Index(l, values[i])
		switch {
		case at < 0:
			t.Errorf("%s line %q has no %q", what, l, values[i])
		case col >= 0 && at != col:
			t.Errorf("%s columns not aligned: %q at offset %d, was %d:\n%s", what, values[i], at, col, strings.Join(lines, "\n"))
		}
		col = at
	}
}

func TestCLIEscapesWhatPeersSent(t *testing.T) {
	addr := hostileAPI(t)

	code, out, errOut := runCLI("members", "--addr", addr)
	checkPrintable(t, "members", out)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || len(lines) != 3 {
		t.Fatalf("members: exit %d, %d lines (want 3):\n%s\nstderr %q", code, len(lines), out, errOut)
	}
	for i, want := range []string{evilPrinted, `"bidi\u202eevil\x7f"`, "plain"} {
		if !strings.HasPrefix(lines[i], want+" ") {
			t.Errorf("members line %d = %q, want it to start with %s", i, lines[i], want)
		}
	}
	checkAligned(t, "members", lines, []string{"10.0.0.1:7946", `"10.0.0.2:7946\x00"`, "10.0.0.3:7946"})
	checkAligned(t, "members", lines, []string{"alive", `"alive\tx"`, "alive"})
	if !strings.Contains(lines[0], `"web=10.0.0.1:80\r"`) || !strings.Contains(lines[1], `"we\tb=10.0.0.2:80"`) {
		t.Errorf("services not escaped:\n%s", out)
	}

	// JSON: every string escaped, and decoded back as it was sent.
	code, out, _ = runCLI("members", "--addr", addr, "--format", "json")
	checkPrintable(t, "members --format json", out)
	var ms []httpapi.Member
	if err := json.Unmarshal([]byte(out), &ms); code != 0 || err != nil || len(ms) != 3 ||
		ms[0].Name != evilName || ms[0].Version != "1.0\x1b[2J" || ms[1].Name != "bidi\u202eevil\x7f" {
		t.Errorf("members --format json: exit %d, %v, %q", code, err, out)
	}

	code, out, _ = runCLI("hosts", "list", "--addr", addr)
	checkPrintable(t, "hosts list", out)
	lines = strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[1], `"a\x1b]0;title\a.com" `) || !strings.Contains(lines[1], evilPrinted) {
		t.Fatalf("hosts list: exit %d:\n%s", code, out)
	}
	checkAligned(t, "hosts list", lines, []string{"BACKEND", `"10.0.0.5:3000\n"`, "10.0.0.6:3000"})
	checkAligned(t, "hosts list", lines, []string{"NODE", evilPrinted, "n1"})
	code, out, _ = runCLI("hosts", "list", "--addr", addr, "--format", "json")
	checkPrintable(t, "hosts list --format json", out)
	var hs []httpapi.Override
	if err := json.Unmarshal([]byte(out), &hs); code != 0 || err != nil || len(hs) != 2 || hs[0].Node != evilName {
		t.Errorf("hosts list --format json: exit %d, %v, %q", code, err, out)
	}

	code, out, _ = runCLI("hosts", "rm", "x.com", "--addr", addr)
	if code != 0 || out != `removed "gone\x1b[0m.com" (was "10.0.0.7:1\r\n")`+"\n" {
		t.Errorf("hosts rm: exit %d, %q", code, out)
	}

	// An error line from the server's answer stays one line, escaped.
	code, out, errOut = runCLI("hosts", "set", "x.com", "10.0.0.1:1", "--addr", addr)
	checkPrintable(t, "hosts set's error", errOut)
	if code != exitUsage || out != "" || errOut != `ringman: invalid host "x\x1b[31m"\nlevel=ERROR msg=forged`+"\n" {
		t.Errorf("hosts set refused: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	code, out, _ = runCLI("keys", "list", "--addr", addr)
	checkPrintable(t, "keys list", out)
	lines = strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || len(lines) != 5 || !strings.HasPrefix(lines[1], `"k\x1b[31m=" `) ||
		lines[4] != `failed: `+evilPrinted+` (10.0.0.9:7946): timeout\nlevel=ERROR msg=forged` {
		t.Fatalf("keys list: exit %d:\n%s", code, out)
	}
	checkAligned(t, "keys list", lines[:3], []string{"INSTALLED", "1/1", "1/1"})
}

func TestCell(t *testing.T) {
	for in, want := range map[string]string{
		"node-1":           "node-1",
		"10.0.0.1:7946":    "10.0.0.1:7946",
		"[::1]:7946":       "[::1]:7946",
		"nœud-é":           "nœud-é",
		"":                 `""`,
		"two words":        `"two words"`,
		`back\slash`:       `"back\\slash"`,
		"tab\there":        `"tab\there"`,
		"bad\xffbyte":      `"bad\xffbyte"`,
		"zero\u200bwidth":  `"zero\u200bwidth"`,
		"c1\u009bcontrols": `"c1\u009bcontrols"`,
	} {
		if got := cell(in); got != want {
			t.Errorf("cell(%q) = %s, want %s", in, got, want)
		}
	}
	if got, want := escapeText("no \"such\" host\x1b[2J\xff"), `no "such" host\x1b[2J\xff`; got != want {
		t.Errorf("escapeText = %s, want %s", got, want)
	}
}
