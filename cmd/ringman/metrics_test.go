package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"ringman/httpapi"
)

// scrape is one parsed GET /metrics.
type scrape map[string]*dto.MetricFamily

func scrapeMetrics(t *testing.T, apiAddr string) scrape {
	t.Helper()
	resp, err := http.Get("http://" + apiAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics is not Prometheus text: %v", err)
	}
	return fams
}

// metric returns the sample of name whose labels are exactly labels
// ("k=v" pairs), or nil.
func (s scrape) metric(name string, labels ...string) *dto.Metric {
	fam := s[name]
	if fam == nil {
		return nil
	}
	for _, m := range fam.GetMetric() {
		var got []string
		for _, l := range m.GetLabel() {
			got = append(got, l.GetName()+"="+l.GetValue())
		}
		if slices.Equal(got, labels) {
			return m
		}
	}
	return nil
}

// value is the value of a counter or gauge sample; missing is reported.
func (s scrape) value(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	m := s.metric(name, labels...)
	switch {
	case m == nil:
		t.Errorf("no sample %s%q in /metrics", name, labels)
		return -1
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Errorf("%s%q is neither a counter nor a gauge", name, labels)
	return -1
}

// waitMetric polls /metrics until cond holds on it.
func waitMetric(t *testing.T, apiAddr, what string, cond func(s scrape) bool) scrape {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := scrapeMetrics(t, apiAddr)
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("not reached within 20s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// gauge reads a sample without failing the test when it is missing (for
// polling conditions).
func (s scrape) gauge(name string, labels ...string) float64 {
	m := s.metric(name, labels...)
	switch {
	case m == nil:
		return -1
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	return m.GetGauge().GetValue()
}

// respConn is a RESP client on a raw socket.
type respConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRESP(t *testing.T, addr string) *respConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &respConn{t: t, c: c, r: bufio.NewReader(c)}
}

// do sends one inline command and returns the first line of the reply
// (and the bulk that follows a "$n" line).
func (rc *respConn) do(cmd string) string {
	rc.t.Helper()
	rc.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(rc.c, cmd+"\r\n"); err != nil {
		rc.t.Fatalf("%s: %v", cmd, err)
	}
	line, err := rc.r.ReadString('\n')
	if err != nil {
		rc.t.Fatalf("%s: %v", cmd, err)
	}
	line = strings.TrimSuffix(line, "\r\n")
	if strings.HasPrefix(line, "$") && line != "$-1" {
		body, err := rc.r.ReadString('\n')
		if err != nil {
			rc.t.Fatalf("%s: %v", cmd, err)
		}
		return strings.TrimSuffix(body, "\r\n")
	}
	return line
}

func (r *serveRun) respAddr(t *testing.T) string {
	return strings.Fields(r.banner(t, "RESP"))[0]
}

// waitReady polls /readyz until it answers 200.
func waitReady(t *testing.T, apiAddr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, st := readyz(t, apiAddr)
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not 200 within 20s: %d %q", code, st.Reason)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readyz(t *testing.T, apiAddr string) (int, httpapi.Status) {
	t.Helper()
	resp, err := http.Get("http://" + apiAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st httpapi.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("/readyz body: %v", err)
	}
	return resp.StatusCode, st
}

func httpGet(t *testing.T, url string, header ...string) int {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestMetrics drives a real node through a known sequence (RESP and HTTP
// lookups, overrides, a refused connection, a second node joining, writing
// an override and leaving) and checks what GET /metrics says about it, as
// Prometheus would parse it: exact counts where they are exact, bounds
// where timing is involved.
func TestMetrics(t *testing.T) {
	a := startServe(t, "--name", "a", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--redis-addr", "127.0.0.1:0",
		"--service", "web=127.0.0.1:9001", "--db", "1=thumbs", "--max-clients", "3")
	api := a.apiAddr(t)
	waitReady(t, api)

	// An override, set through the API.
	if code, _, errOut := runCLI("hosts", "set", "pinned.example.com", "10.9.9.9:1", "--addr", api); code != 0 {
		t.Fatalf("hosts set: exit %d: %s", code, errOut)
	}

	// RESP: 4 lookups answered by the override, 6 by the ring, 3 misses
	// (db 1 is thumbs, which has no instance), 2 errors.
	rc := dialRESP(t, a.respAddr(t))
	for i := range 4 {
		if got := rc.do(fmt.Sprintf("GET pinned.example.com/%d", i)); got != "10.9.9.9:1" {
			t.Fatalf("GET of an overridden host: %q", got)
		}
	}
	for i := range 5 {
		if got := rc.do(fmt.Sprintf("GET /img/%d.jpg", i)); got != "127.0.0.1:9001" {
			t.Fatalf("GET on the ring: %q", got)
		}
	}
	if got := rc.do("RING.LOOKUP /img/x.jpg 3"); got != "*1" {
		t.Fatalf("RING.LOOKUP: %q", got)
	}
	rc.r.ReadString('\n') // the candidate's "$n" line
	rc.r.ReadString('\n') // and the candidate
	if got := rc.do("GET"); !strings.HasPrefix(got, "-ERR wrong number of arguments") {
		t.Fatalf("GET without a key: %q", got)
	}
	if got := rc.do("RING.LOOKUP /x 0"); !strings.HasPrefix(got, "-ERR") {
		t.Fatalf("RING.LOOKUP with n=0: %q", got)
	}
	if got := rc.do("SELECT 1"); got != "+OK" {
		t.Fatalf("SELECT 1: %q", got)
	}
	for i := range 3 {
		if got := rc.do(fmt.Sprintf("GET /thumb/%d", i)); got != "$-1" {
			t.Fatalf("GET on an empty service: %q", got)
		}
	}

	// HTTP: ring twice (lookup, route), override once, one miss, one error.
	base := "http://" + api
	for _, tc := range []struct {
		path   string
		header []string
		want   int
	}{
		{"/v1/lookup?key=/a", nil, 200},
		{"/v1/lookup?key=pinned.example.com/a", nil, 200},
		{"/v1/lookup?key=/a&service=thumbs", nil, 404}, // known (--db 1=thumbs), no instance
		{"/v1/lookup?key=/a&n=100", nil, 400},
		{"/v1/route", []string{httpapi.HeaderKey, "/a"}, 200},
	} {
		if got := httpGet(t, base+tc.path, tc.header...); got != tc.want {
			t.Fatalf("GET %s: %d, want %d", tc.path, got, tc.want)
		}
	}

	// Max clients 3: rc and two more are served, the fourth is refused.
	for range 2 {
		if got := dialRESP(t, a.respAddr(t)).do("PING"); got != "+PONG" {
			t.Fatalf("PING: %q", got)
		}
	}
	refused := dialRESP(t, a.respAddr(t))
	refused.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, _ := refused.r.ReadString('\n'); line != "-ERR max number of clients reached\r\n" {
		t.Fatalf("fourth RESP client got %q, want the max clients error", line)
	}

	// A second node joins, writes an override, and leaves.
	b := startServe(t, "--name", "b", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--redis-addr", "127.0.0.1:0",
		"--service", "web=127.0.0.1:9002", "--join", a.gossipAddr(t))
	waitMetric(t, api, "a sees b alive and web has 2 instances", func(s scrape) bool {
		return s.gauge("ringman_members", "state=alive") == 2 && s.gauge("ringman_ring_instances", "service=web") == 2
	})
	waitReady(t, b.apiAddr(t))
	if code, _, errOut := runCLI("hosts", "set", "b.example.com", "10.9.9.9:2", "--addr", b.apiAddr(t)); code != 0 {
		t.Fatalf("hosts set on b: exit %d: %s", code, errOut)
	}
	waitMetric(t, api, "b's override reached a", func(s scrape) bool { return s.gauge("ringman_overrides") == 2 })
	b.stop(t)
	s := waitMetric(t, api, "a sees b left and web back to 1 instance", func(s scrape) bool {
		return s.gauge("ringman_members", "state=left") == 1 && s.gauge("ringman_ring_instances", "service=web") == 1
	})

	exact := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"ringman_lookups_total", []string{"protocol=resp", "source=override"}, 4},
		{"ringman_lookups_total", []string{"protocol=resp", "source=ring"}, 6},
		{"ringman_lookups_total", []string{"protocol=resp", "source=miss"}, 3},
		{"ringman_lookup_errors_total", []string{"protocol=resp"}, 2},
		{"ringman_lookups_total", []string{"protocol=http", "source=override"}, 1},
		{"ringman_lookups_total", []string{"protocol=http", "source=ring"}, 2},
		{"ringman_lookups_total", []string{"protocol=http", "source=miss"}, 1},
		{"ringman_lookup_errors_total", []string{"protocol=http"}, 1},
		{"ringman_resp_connections", nil, 3},
		{"ringman_resp_max_clients", nil, 3},
		{"ringman_resp_connections_accepted_total", nil, 4},
		{"ringman_resp_limit_disconnects_total", []string{"reason=max_clients"}, 1},
		{"ringman_resp_limit_disconnects_total", []string{"reason=request_too_big"}, 0},
		{"ringman_resp_limit_disconnects_total", []string{"reason=too_many_arguments"}, 0},
		{"ringman_resp_limit_disconnects_total", []string{"reason=protocol_error"}, 0},
		{"ringman_resp_limit_disconnects_total", []string{"reason=idle_timeout"}, 0},
		{"ringman_ring_instances", []string{"service=web"}, 1},
		{"ringman_ring_instances", []string{"service=thumbs"}, 0},
		{"ringman_members", []string{"state=alive"}, 1},
		{"ringman_members", []string{"state=draining"}, 0},
		{"ringman_members", []string{"state=leaving"}, 0},
		{"ringman_members", []string{"state=left"}, 1},
		{"ringman_members", []string{"state=failed"}, 0},
		{"ringman_overrides", nil, 2},
		{"ringman_override_pending_oldest_seconds", nil, 0},
	}
	for _, e := range exact {
		if got := s.value(t, e.name, e.labels...); got != e.want {
			t.Errorf("%s%q = %v, want %v", e.name, e.labels, got, e.want)
		}
	}
	if m := s.metric("ringman_build_info", "commit="+commit, "goversion="+runtime.Version(), "version="+version); m == nil || m.GetGauge().GetValue() != 1 {
		t.Errorf("ringman_build_info{version=%q, commit=%q} is not 1", version, commit)
	}

	// Ring changes of web: its first ring, b joined, b drained and left.
	// More if gossip flapped on a busy machine, never fewer.
	if got := s.value(t, "ringman_ring_rebuilds_total", "service=web"); got < 3 {
		t.Errorf("ringman_ring_rebuilds_total{service=web} = %v, want at least 3", got)
	}
	if got := s.value(t, "ringman_ring_rebuild_duration_seconds", "service=web"); got <= 0 || got > 10 {
		t.Errorf("ringman_ring_rebuild_duration_seconds{service=web} = %v, want in (0, 10]", got)
	}
	// b's instance leaving moves its keys (about half) back to a's.
	if got := s.value(t, "ringman_ring_keys_moved_ratio", "service=web"); got < 0.2 || got > 0.8 {
		t.Errorf("ringman_ring_keys_moved_ratio{service=web} = %v after b left, want about 0.5", got)
	}

	// Histograms: one replicated change (b's), commits for a's own set,
	// the merge of b's, and the known peers.
	if h := s.metric("ringman_override_replication_delay_seconds").GetHistogram(); h.GetSampleCount() != 1 || h.GetSampleSum() < 0 || h.GetSampleSum() > 10 {
		t.Errorf("ringman_override_replication_delay_seconds: %d samples, sum %v; want 1 (b's override) within 10 s", h.GetSampleCount(), h.GetSampleSum())
	}
	if h := s.metric("ringman_store_commit_duration_seconds").GetHistogram(); h.GetSampleCount() < 3 || h.GetSampleSum() <= 0 {
		t.Errorf("ringman_store_commit_duration_seconds: %d samples, sum %v; want at least 3 (a's set, b's merged, the peers)", h.GetSampleCount(), h.GetSampleSum())
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if s[name] == nil {
			t.Errorf("%s is missing: the Go and process collectors must stay registered", name)
		}
	}
}

// TestReadyz: /readyz answers 200 only once the node has joined (or has no
// seeds) and its rings show the cluster; a node whose seeds never answer
// stays 503 with a reason that names them, while /healthz is 200.
func TestReadyz(t *testing.T) {
	// Nothing to join: ready at once.
	a := startServe(t, "--name", "a", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--redis-addr", "127.0.0.1:0",
		"--service", "web=127.0.0.1:9001")
	waitReady(t, a.apiAddr(t))

	// A seed that never answers: a port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	lonely := startServe(t, "--name", "lonely", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--redis-addr", "127.0.0.1:0",
		"--service", "web=127.0.0.1:9003", "--join", dead)
	api := lonely.apiAddr(t)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(lonely.errOut.String(), "cannot join cluster yet") {
		if time.Now().After(deadline) {
			t.Fatalf("no failed join attempt logged within 20s:\n%s", lonely.errOut)
		}
		time.Sleep(10 * time.Millisecond)
	}
	code, st := readyz(t, api)
	if code != http.StatusServiceUnavailable || !strings.Contains(st.Reason, dead) || !strings.Contains(st.Reason, "not joined") {
		t.Errorf("/readyz of a node whose seed is dead: %d %q; want 503 with a reason naming %s", code, st.Reason, dead)
	}
	if got := httpGet(t, "http://"+api+"/healthz"); got != http.StatusOK {
		t.Errorf("/healthz of a node not ready: %d, want 200", got)
	}
	// It still answers lookups from its own view meanwhile.
	if got := dialRESP(t, lonely.respAddr(t)).do("GET /x"); got != "127.0.0.1:9003" {
		t.Errorf("GET on a node not ready: %q", got)
	}

	// A node that joins a: when it first says ready, its rings have a's
	// instance as well as its own.
	b := startServe(t, "--name", "b", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--redis-addr", "127.0.0.1:0",
		"--service", "web=127.0.0.1:9002", "--join", a.gossipAddr(t))
	waitReady(t, b.apiAddr(t))
	resp, err := http.Get("http://" + b.apiAddr(t) + "/v1/rings")
	if err != nil {
		t.Fatal(err)
	}
	var rings map[string]httpapi.Ring
	json.NewDecoder(resp.Body).Decode(&rings)
	resp.Body.Close()
	var insts []string
	for _, i := range rings["web"].Instances {
		insts = append(insts, i.Instance)
	}
	if want := []string{"127.0.0.1:9001", "127.0.0.1:9002"}; !slices.Equal(insts, want) {
		t.Errorf("b said ready with web = %q, want %q", insts, want)
	}
	// Still not ready: lonely's seed is still dead.
	if code, _ := readyz(t, api); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz of lonely: %d, want 503 still", code)
	}
}

func TestMaxClientsFlag(t *testing.T) {
	code, _, errOut := runCLI("serve", "--max-clients", "-1")
	if code != 2 || !strings.Contains(errOut, "--max-clients") {
		t.Errorf("--max-clients -1: exit %d, %q; want a usage error", code, errOut)
	}
	t.Setenv("RINGMAN_MAX_CLIENTS", "-5")
	code, _, errOut = runCLI("serve")
	if code != 2 || !strings.Contains(errOut, "--max-clients") {
		t.Errorf("RINGMAN_MAX_CLIENTS=-5: exit %d, %q; want a usage error", code, errOut)
	}
}
