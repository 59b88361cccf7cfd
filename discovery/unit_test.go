package discovery

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
)

func TestMetaRoundTrip(t *testing.T) {
	cases := []meta{
		{},
		{Fingerprint: "fp", Version: "v1.2.3"},
		{Draining: true, Fingerprint: "x", Services: map[string][]string{"web": {"10.0.0.1:80"}}},
		{Leaving: true, Draining: true, Fingerprint: "f", Version: "v",
			Services: map[string][]string{"web": {"a:1", "b:2"}, "thumbs": {"[::1]:8080"}}},
	}
	for _, m := range cases {
		_, b, services, err := advertise(m)
		if err != nil || services != nil {
			t.Fatalf("encode %+v: %v", m, err)
		}
		got, err := decodeMeta(b)
		if err != nil {
			t.Fatalf("decode %+v: %v", m, err)
		}
		if !equalMeta(got, m) {
			t.Errorf("round trip: got %+v, want %+v", got, m)
		}
	}
}

func TestMetaEncodingIsCompact(t *testing.T) {
	m := meta{Fingerprint: "0123456789abcdef", Version: "v1.0.0",
		Services: map[string][]string{"web": {"10.0.0.1:8080", "10.0.0.2:8080"}}}
	b := m.encode()
	// 3 header + 17 fp + 7 version + 1 count + 4 name + 1 count + 2*14.
	if len(b) != 61 {
		t.Errorf("encoded size %d, want 61", len(b))
	}
}

func TestDecodeMetaRejects(t *testing.T) {
	valid := meta{Fingerprint: "fp", Services: map[string][]string{"web": {"h:1"}}}.encode()
	cases := map[string][]byte{
		"empty":           nil,
		"json":            []byte(`{"s":{}}`),
		"future format":   {metaMagic, 2, 0},
		"header only":     {metaMagic, metaFormat1},
		"truncated":       valid[:len(valid)-1],
		"huge string":     {metaMagic, metaFormat1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"huge count":      {metaMagic, metaFormat1, 0, 0, 0, 0xff, 0xff, 0x03},
		"bad utf8":        {metaMagic, metaFormat1, 0, 1, 0xff, 0, 0},
		"bad instance":    meta{Services: map[string][]string{"web": {"nohost"}}}.encode(),
		"port zero":       meta{Services: map[string][]string{"web": {"h:0"}}}.encode(),
		"empty service":   meta{Services: map[string][]string{"": {"h:1"}}}.encode(),
		"overflow varint": {metaMagic, metaFormat1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		// A services digest (flag 4) comes instead of the services.
		"services and digest": append(setFlag(valid, flagServicesDigest), appendDigest(nil, servicesDigest{size: 9, hash: [digestHashLen]byte{1}})...),
		"digest missing":      {metaMagic, metaFormat1, flagServicesDigest, 0, 0, 0},
		"digest truncated":    {metaMagic, metaFormat1, flagServicesDigest, 0, 0, 0, 9, 1, 2, 3},
		"digest short":        append([]byte{metaMagic, metaFormat1, flagServicesDigest, 0, 0, 0, 9}, make([]byte, digestHashLen-1)...),
		"digest size zero":    {metaMagic, metaFormat1, flagServicesDigest, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8},
		"digest too large":    append([]byte{metaMagic, metaFormat1, flagServicesDigest, 0, 0, 0}, appendDigest(nil, servicesDigest{size: maxServicesBytes + 1, hash: [digestHashLen]byte{1}})...),
	}
	for name, b := range cases {
		if m, err := decodeMeta(b); err == nil {
			t.Errorf("%s: decoded %+v, want an error", name, m)
		}
	}
	// Fields appended by a later release are ignored.
	if _, err := decodeMeta(append(valid, 1, 2, 3)); err != nil {
		t.Errorf("trailing bytes: %v", err)
	}
}

// setFlag returns a copy of the encoded meta b with flag set.
func setFlag(b []byte, flag byte) []byte {
	b = slices.Clone(b)
	b[2] |= flag
	return b
}

func FuzzDecodeMeta(f *testing.F) {
	// More seeds live in testdata/fuzz/FuzzDecodeMeta.
	f.Add(meta{Fingerprint: "fp", Version: "v", Services: map[string][]string{"web": {"h:1", "i:2"}}}.encode())
	f.Add(meta{Fingerprint: "fp", Version: "v", Digest: servicesDigest{size: 4000, hash: [digestHashLen]byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}}}.encode())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to something that decodes the same.
		again, err := decodeMeta(m.encode())
		if err != nil {
			t.Fatalf("re-encoded meta does not decode: %v", err)
		}
		if !equalMeta(m, again) {
			t.Fatalf("round trip changed meta: %+v -> %+v", m, again)
		}
		if m.Digest != (servicesDigest{}) && m.Services != nil {
			t.Fatalf("decoded both services and a digest: %+v", m)
		}
		for name, insts := range m.Services {
			if ValidateServiceName(name) != nil {
				t.Fatalf("decoded invalid service name %q", name)
			}
			for _, inst := range insts {
				if ValidateInstance(inst) != nil {
					t.Fatalf("decoded invalid instance %q", inst)
				}
			}
		}
	})
}

func TestMemberlistConfig(t *testing.T) {
	for _, p := range []string{"", "lan", "wan", "fast"} {
		c, err := memberlistConfig(p)
		if err != nil {
			t.Fatalf("%q: %v", p, err)
		}
		if c.PushPullInterval <= 0 || c.PushPullInterval > 30*time.Second {
			t.Errorf("%q: PushPullInterval %v, want a short one", p, c.PushPullInterval)
		}
		local := memberlist.DefaultLocalConfig()
		if c.ProbeInterval == local.ProbeInterval && c.ProbeTimeout == local.ProbeTimeout &&
			c.TCPTimeout == local.TCPTimeout {
			t.Errorf("%q looks like DefaultLocalConfig", p)
		}
	}
	fast, _ := memberlistConfig("fast")
	got := []time.Duration{fast.ProbeInterval, fast.ProbeTimeout, fast.GossipInterval, fast.PushPullInterval}
	want := []time.Duration{200 * time.Millisecond, 100 * time.Millisecond, 50 * time.Millisecond, 5 * time.Second}
	if !reflect.DeepEqual(got, want) || fast.SuspicionMult != 2 {
		t.Errorf("fast: probe/timeout/gossip/pushpull %v suspicion %d, want %v and 2", got, fast.SuspicionMult, want)
	}
	wan, _ := memberlistConfig("wan")
	if wan.ProbeInterval != memberlist.DefaultWANConfig().ProbeInterval {
		t.Errorf("wan does not start from DefaultWANConfig")
	}
	if _, err := memberlistConfig("local"); err == nil || !strings.Contains(err.Error(), `"local"`) {
		t.Errorf("unknown profile: err = %v, want one naming it", err)
	}
}

func TestParseLogLine(t *testing.T) {
	cases := []struct {
		line  string
		level slog.Level
		msg   string
	}{
		{"2026/01/02 15:04:05 [DEBUG] memberlist: Stream connection from=1.2.3.4:5", slog.LevelDebug, "memberlist: Stream connection from=1.2.3.4:5"},
		{"[INFO] memberlist: Marking b as failed", slog.LevelInfo, "memberlist: Marking b as failed"},
		{"[WARN] memberlist: Refuting a dead message", slog.LevelWarn, "memberlist: Refuting a dead message"},
		{"[ERR] memberlist: Failed push/pull merge: x", slog.LevelError, "memberlist: Failed push/pull merge: x"},
		{"[ERROR] something", slog.LevelError, "something"},
		{"no tag at all\n", slog.LevelInfo, "no tag at all"},
		{"[unknown] tag", slog.LevelInfo, "[unknown] tag"},
	}
	for _, c := range cases {
		level, msg := parseLogLine(c.line)
		if level != c.level || msg != c.msg {
			t.Errorf("parseLogLine(%q) = %v %q, want %v %q", c.line, level, msg, c.level, c.msg)
		}
	}
}

func TestMemberlistLoggerLevels(t *testing.T) {
	logger, buf := newTestLogger(t)
	ml := memberlistLogger(logger)
	ml.Printf("[WARN] memberlist: one")
	ml.Printf("[ERR] memberlist: two")
	ml.Printf("[DEBUG] memberlist: hidden at info")
	out := buf.String()
	for _, want := range []string{`level=WARN msg="memberlist: one"`, `level=ERROR msg="memberlist: two"`} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hidden") {
		t.Errorf("debug line logged at info level:\n%s", out)
	}
}

// A peer's huge name inside memberlist's own line does not reach the log whole.
func TestMemberlistLoggerCapsLongLines(t *testing.T) {
	logger, buf := newTestLogger(t)
	ml := memberlistLogger(logger)
	name := strings.Repeat("é", 2500) // 5,000 bytes, two per rune
	ml.Printf("[WARN] memberlist: Refuting a suspect message (from: %s)", name)
	out := buf.String()
	if strings.Contains(out, name[:2*maxLogLine]) {
		t.Errorf("the whole name was logged: %d bytes", len(out))
	}
	if !strings.Contains(out, "more bytes)") || !utf8.ValidString(out) {
		t.Errorf("cut line does not say what it dropped, or splits a rune:\n%.200s", out)
	}
	if len(out) > 2*maxLogLine {
		t.Errorf("line is %d bytes, want about %d", len(out), maxLogLine)
	}
}

func TestStartRejectsBadInput(t *testing.T) {
	base := func() Config {
		return Config{Name: "n", BindAddr: "127.0.0.1:0", Profile: "fast", Logger: slog.New(slog.DiscardHandler)}
	}
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"empty name", func(c *Config) { c.Name = "" }, "name is empty"},
		{"name with space", func(c *Config) { c.Name = "a b" }, `character ' ' not allowed`},
		{"name with newline", func(c *Config) { c.Name = "a\nb" }, `"a\nb"`},
		{"bind without port", func(c *Config) { c.BindAddr = "127.0.0.1" }, "want host:port"},
		{"bind bad port", func(c *Config) { c.BindAddr = "127.0.0.1:99999" }, "port must be"},
		{"bind unresolvable", func(c *Config) { c.BindAddr = "no-such-host.invalid:1" }, "cannot resolve"},
		{"advertise garbage", func(c *Config) { c.AdvertiseAddr = "::::" }, "advertise address"},
		{"advertise unspecified", func(c *Config) { c.AdvertiseAddr = "0.0.0.0:7946" }, "not 0.0.0.0"},
		{"unknown profile", func(c *Config) { c.Profile = "local" }, "unknown gossip profile"},
		{"short key", func(c *Config) { c.Keys = [][]byte{make([]byte, 10)} }, "key 1 of 1 is 10 bytes"},
		{"second key bad", func(c *Config) { c.Keys = [][]byte{make([]byte, 16), make([]byte, 33)} }, "key 2 of 2 is 33 bytes"},
		{"bad instance", func(c *Config) { c.Services = map[string][]string{"web": {"10.0.0.1"}} }, `instance "10.0.0.1"`},
		{"bad service name", func(c *Config) { c.Services = map[string][]string{"a b": {"h:1"}} }, "service name"},
		{"check URL", func(c *Config) { c.Check.URL = "localhost:8080/health" }, "health check URL"},
		{"check fall", func(c *Config) { c.Check = Check{URL: "http://127.0.0.1:1/", Fall: -1} }, "want 1 to 100 probes"},
		{"check rise", func(c *Config) { c.Check = Check{URL: "http://127.0.0.1:1/", Rise: 101} }, "want 1 to 100 probes"},
		{"check statuses", func(c *Config) { c.Check = Check{URL: "http://127.0.0.1:1/", StatusMin: 400, StatusMax: 300} }, "want a range within 100-599"},
		{"long label", func(c *Config) { c.Label = strings.Repeat("x", 300) }, "label is 300 bytes"},
	}
	for _, tc := range cases {
		cfg := base()
		tc.edit(&cfg)
		n, err := Start(cfg)
		if err == nil {
			_ = n.Shutdown()
			t.Errorf("%s: Start succeeded", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not contain %q", tc.name, err, tc.want)
		}
	}
}

func TestStartBindConflict(t *testing.T) {
	a := startNode(t, "a", nil)
	_, err := Start(Config{Name: "b", BindAddr: a.Addr(), Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("binding a used port: %v", err)
	}
}

func TestAdvertiseAddr(t *testing.T) {
	n := startNode(t, "a", func(c *Config) { c.AdvertiseAddr = "127.0.0.1:7000" })
	if n.Addr() != "127.0.0.1:7000" {
		t.Errorf("Addr() = %s, want the advertised 127.0.0.1:7000", n.Addr())
	}
	m := startNode(t, "b", func(c *Config) { c.AdvertiseAddr = "localhost:0" })
	if !strings.HasPrefix(m.Addr(), "127.0.0.1:") || strings.HasSuffix(m.Addr(), ":0") {
		t.Errorf("Addr() = %s, want 127.0.0.1 with the bound port", m.Addr())
	}
}

func TestForgetAfter(t *testing.T) {
	n := startNode(t, "a", nil)
	now := time.Now()
	n.table.mu.Lock()
	n.table.members["old"] = &member{name: "old", status: StatusFailed, since: now.Add(-forgetAfter - time.Second)}
	n.table.members["recent"] = &member{name: "recent", status: StatusLeft, since: now.Add(-time.Minute)}
	n.table.members["alive"] = &member{name: "alive", status: StatusAlive, since: now.Add(-2 * forgetAfter)}
	n.table.mu.Unlock()
	var names []string
	for _, m := range n.Members() {
		names = append(names, m.Name)
	}
	if want := []string{"a", "alive", "recent"}; !reflect.DeepEqual(names, want) {
		t.Errorf("members %v, want %v", names, want)
	}
}

func TestExplainJoinError(t *testing.T) {
	multi := multiErr{errors.New("failed to join 1.2.3.4:5: EOF")}
	got := explainJoinError(fmt.Errorf("wrapped: %w", multi))
	if strings.Contains(got, "\n") || !strings.Contains(got, "label") {
		t.Errorf("explainJoinError = %q, want one line with a hint", got)
	}
}

type multiErr []error

func (m multiErr) Error() string          { return "1 error occurred:\n\t* " + m[0].Error() + "\n\n" }
func (m multiErr) WrappedErrors() []error { return m }

// TestShutdownStopsEverything runs alone (not parallel), so the goroutine
// count is this test's own.
func TestShutdownStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	logger, _ := newTestLogger(t)
	var nodes []*Node
	for i := range 3 {
		cfg := Config{Name: fmt.Sprintf("n%d", i), BindAddr: "127.0.0.1:0", Profile: "fast", Logger: logger,
			Peers: &memPeers{}, Check: Check{URL: srv.URL, Interval: 10 * time.Millisecond},
			Seeds: []string{"127.0.0.1:1"}} // never answers: the join loop keeps going
		if i > 0 {
			cfg.Seeds = append(cfg.Seeds, nodes[0].Addr())
		}
		n, err := start(cfg, testTunables())
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	var wg sync.WaitGroup
	for _, n := range nodes {
		for range 3 { // concurrent, repeated Shutdowns
			wg.Go(func() { _ = n.Shutdown() })
		}
	}
	wg.Wait()
	srv.Close()
	waitFor(t, 5*time.Second, func() (bool, string) {
		n := runtime.NumGoroutine()
		if n <= before {
			return true, ""
		}
		buf := make([]byte, 1<<20)
		return false, fmt.Sprintf("%d goroutines, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	})
}
