package main

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

const wrkSample = `Running 5s test @ http://127.0.0.1:41234/
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.61ms    2.10ms  40.12ms   85.00%
    Req/Sec     6.30k   512.00     7.10k    70.00%
  Latency Distribution
     50%    3.45ms
     75%    4.20ms
     90%    5.80ms
     99%  850.00us
  62701 requests in 5.00s, 9.27MB read
Requests/sec:  12538.42
Transfer/sec:      1.85MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkSample)
	if err != nil {
		t.Fatal(err)
	}
	if r.rps != 12538.42 || math.Abs(r.p50-3.45e-3) > 1e-12 || math.Abs(r.p99-850e-6) > 1e-12 {
		t.Errorf("parseWrk = %+v", r)
	}
	bad := strings.Replace(wrkSample, "Requests/sec", "  Non-2xx or 3xx responses: 17\nRequests/sec", 1)
	if _, err := parseWrk(bad); err == nil || !strings.Contains(err.Error(), "17 non-2xx") {
		t.Errorf("non-2xx answers: err = %v", err)
	}
	bad = strings.Replace(wrkSample, "Requests/sec", "  Socket errors: connect 0, read 3, write 0, timeout 0\nRequests/sec", 1)
	if _, err := parseWrk(bad); err == nil || !strings.Contains(err.Error(), "Socket errors") {
		t.Errorf("socket errors: err = %v", err)
	}
	if _, err := parseWrk("garbage"); err == nil {
		t.Error("garbage parsed")
	}
}

func TestParseWrkRequests(t *testing.T) {
	r, err := parseWrk(wrkSample)
	if err != nil {
		t.Fatal(err)
	}
	if r.requests != 62701 {
		t.Errorf("requests = %v, want 62701", r.requests)
	}
	if _, err := parseWrk(strings.Replace(wrkSample, "62701 requests in", "requests in", 1)); err == nil {
		t.Error("no request count parsed")
	}
}

func TestParseProcStat(t *testing.T) {
	// A command with a space and a parenthesis, as nginx's "nginx: worker
	// process" has spaces: the fields count from the last ')'.
	line := "4242 (nginx: worker (x)) S 4241 4241 4241 0 -1 4194624 1000 0 0 0 250 75 0 0 20 0 1 0 12345 1000000 500 18446744073709551615\n"
	st, err := parseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != 4241 || st.cpu != 3250*time.Millisecond {
		t.Errorf("parseProcStat = %+v, want ppid 4241, cpu 3.25s", st)
	}
	for _, bad := range []string{"", "4242 nginx S 1", "4242 (nginx) S x 1 1 1 1 1 1 1 1 1 1 1 1"} {
		if _, err := parseProcStat(bad); err == nil {
			t.Errorf("parseProcStat(%q) parsed", bad)
		}
	}
}

// A config that failed a round gets one ERROR row, and so does the config
// compared with it; the others keep their figures.
func TestNginxTableFailedConfig(t *testing.T) {
	env := &nginxEnv{hash: 0, floor: 1, lua: 2, module: -1, balancer: -1, seed: 4, seedPeer: 3, configs: []nginxConfig{
		{name: "built-in hash"}, {name: "Lua floor"}, {name: "lua.conf", goal: 0.9},
		{name: "static map"}, {name: "seed form", peer: 3, goal: 1},
	}}
	ok := []wrkResult{{rps: 100, p50: 1e-3, p99: 2e-3, cpu: 1e-5}}
	results := [][]wrkResult{ok, ok, ok, nil, nil}
	failed := []error{nil, nil, nil, errors.New("round 1: 3 non-2xx answers\nlog tail"), nil}
	var errs, lua []string
	for _, r := range nginxTable(env, results, failed) {
		if r.met == "ERROR" {
			errs = append(errs, r.measurement+": "+r.ringman)
		}
		if strings.HasPrefix(r.measurement, "nginx lua.conf: req/s") {
			lua = append(lua, r.ratio+" "+r.met)
		}
	}
	want := []string{
		"nginx static map: round 1: 3 non-2xx answers",
		"nginx seed form: its peer static map failed: round 1: 3 non-2xx answers",
	}
	if !slices.Equal(errs, want) {
		t.Errorf("ERROR rows = %q, want %q", errs, want)
	}
	if !slices.Equal(lua, []string{"1.00× yes"}) {
		t.Errorf("lua.conf's row = %q, want its ratio and verdict", lua)
	}
}
