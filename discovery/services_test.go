package discovery

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// manyServices returns n services named like "svc-042", each with perService
// instances like "10.1.2.3:8080"; base tells apart the nodes' instances.
func manyServices(n, perService, base int) map[string][]string {
	s := make(map[string][]string, n)
	for i := range n {
		for j := range perService {
			s[fmt.Sprintf("svc-%03d", i)] = append(s[fmt.Sprintf("svc-%03d", i)],
				fmt.Sprintf("10.%d.%d.%d:8080", base, i%256, j+1))
		}
	}
	return s
}

// liveHas reports whether every node's live instances include every one of
// want's, and, for each service in want, no others but those of extra.
func liveHas(nodes []*testNode, want map[string][]string) func() (bool, string) {
	return func() (bool, string) {
		for _, n := range nodes {
			live := n.Live()
			for svc, insts := range want {
				if got := live[svc]; !slices.Equal(got, insts) {
					return false, fmt.Sprintf("%s: live %s = %v, want %v (%d of %d services right)",
						n.Name(), svc, got, insts, countEqual(live, want), len(want))
				}
			}
		}
		return true, ""
	}
}

func countEqual(live, want map[string][]string) int {
	n := 0
	for svc, insts := range want {
		if slices.Equal(live[svc], insts) {
			n++
		}
	}
	return n
}

// lastChange keeps the live set a node last handed to OnChange, as the
// router takes it.
type lastChange struct {
	mu   sync.Mutex
	live map[string][]string
}

func (l *lastChange) set(live map[string][]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.live = live
}

// has reports whether the last OnChange had exactly want's instances for
// each service in want.
func (l *lastChange) has(want map[string][]string) func() (bool, string) {
	return func() (bool, string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if n := countEqual(l.live, want); n != len(want) {
			return false, fmt.Sprintf("OnChange had %d of %d services right", n, len(want))
		}
		return true, ""
	}
}

// bigCluster starts a, b and c, then a node "big" advertising services,
// joined through a, and waits until all four see each other alive. aChanges
// has what a last handed to OnChange.
func bigCluster(t *testing.T, services map[string][]string) (all []*testNode, big *testNode, aChanges *lastChange) {
	t.Helper()
	aChanges = &lastChange{}
	a := startNode(t, "a", func(cfg *Config) { cfg.OnChange = aChanges.set })
	b := startNode(t, "b", seeds(a))
	c := startNode(t, "c", seeds(a))
	waitFor(t, 10*time.Second, webIs([]*testNode{a, b, c}, "a", "b", "c"))
	big = startNode(t, "big", func(cfg *Config) {
		cfg.Seeds = []string{a.Addr()}
		cfg.Services = services
	})
	all = []*testNode{a, b, c, big}
	for _, n := range all {
		waitFor(t, 10*time.Second, statusIs(all, n.Name(), StatusAlive))
	}
	return all, big, aChanges
}

// TestManyServicesJoin: a node with more services than fit in memberlist's
// 512 bytes joins a 3-node cluster, and every node ends up with every
// instance of every service, as with inline metadata.
func TestManyServicesJoin(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ services, perService int }{{100, 1}, {100, 2}, {200, 2}} {
		t.Run(fmt.Sprintf("%dx%d", tc.services, tc.perService), func(t *testing.T) {
			t.Parallel()
			services := manyServices(tc.services, tc.perService, 1)
			all, big, aChanges := bigCluster(t, services)
			if big.localServices == nil || len(big.localBytes) > memberlist.MetaMaxSize {
				t.Fatalf("services went inline (%d bytes of metadata)", len(big.localBytes))
			}
			waitFor(t, 15*time.Second, liveHas(all, services))
			waitFor(t, 5*time.Second, aChanges.has(services))
			waitFor(t, 5*time.Second, webIs(all, "a", "b", "c"))
			for _, n := range all {
				for _, m := range n.Members() {
					if m.Name == "big" && !equalServices(m.Services, services) {
						t.Errorf("%s lists big with %d services, want %d", n.Name(), len(m.Services), len(services))
					}
				}
			}
		})
	}
}

// TestManyServicesChange: a change of one service's instances on the big
// node reaches every node, and a drain and undrain still take its instances
// out of the rings and back at once.
func TestManyServicesChange(t *testing.T) {
	t.Parallel()
	services := manyServices(100, 2, 1)
	all, big, aChanges := bigCluster(t, services)
	waitFor(t, 15*time.Second, liveHas(all, services))

	changed := maps.Clone(services)
	changed["svc-042"] = []string{"10.9.9.9:8080"}
	if err := big.SetServices(changed); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, liveHas(all, changed))
	waitFor(t, 5*time.Second, aChanges.has(changed))

	if err := big.SetDraining(true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() (bool, string) {
		for _, n := range all {
			if got := n.Live()["svc-042"]; got != nil {
				return false, fmt.Sprintf("%s: live svc-042 = %v with big draining", n.Name(), got)
			}
		}
		return true, ""
	})
	if err := big.SetDraining(false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, liveHas(all, changed))

	// Back to few: inline again.
	few := map[string][]string{"web": {instanceOf("big")}}
	if err := big.SetServices(few); err != nil {
		t.Fatal(err)
	}
	if big.localServices != nil {
		t.Error("a few services still go outside the metadata")
	}
	waitFor(t, 10*time.Second, webIs(all, "a", "b", "c", "big"))
	waitFor(t, 10*time.Second, func() (bool, string) {
		for _, n := range all {
			if got := n.Live()["svc-001"]; got != nil {
				return false, fmt.Sprintf("%s: live svc-001 = %v after big dropped it", n.Name(), got)
			}
		}
		return true, ""
	})
}

// TestManyServicesFetchRetried: a node that cannot reach the big node when
// it learns of it (the two are cut off from each other; the rest of the
// cluster vouches for both) sees it alive without services, and fetches
// them once the network heals, by its retries alone.
func TestManyServicesFetchRetried(t *testing.T) {
	t.Parallel()
	cut := newNetCut()
	tun := cut.tunables()
	a := startNodeTun(t, "a", tun, nil)
	b := startNodeTun(t, "b", tun, seeds(a))
	c := startNodeTun(t, "c", tun, seeds(a))
	waitFor(t, 10*time.Second, webIs([]*testNode{a, b, c}, "a", "b", "c"))
	services := manyServices(100, 2, 1)
	big := startNodeTun(t, "big", tun, func(cfg *Config) { cfg.Services = services })
	cut.split([]*testNode{c}, []*testNode{big})
	if _, err := big.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	all := []*testNode{a, b, c, big}
	waitFor(t, 15*time.Second, liveHas([]*testNode{a, b, big}, services))
	waitFor(t, 10*time.Second, statusIs([]*testNode{c}, "big", StatusAlive))
	if live := c.Live(); live["svc-000"] != nil || !slices.Equal(live["web"], []string{instanceOf("a"), instanceOf("b"), instanceOf("c")}) {
		t.Fatalf("c, cut off from big, has live %v; want a, b and c's web only", formatServices(live))
	}
	cut.heal()
	waitFor(t, 15*time.Second, liveHas(all, services))
}

// TestForgedServicesRefused: while a node waits for another's new services
// (the two are cut off from each other), answers that do not hash to the
// digest in that node's metadata, or cannot be read, are refused with one
// log line and change nothing: the services verified before stay. Once the
// network heals, the genuine ones arrive.
func TestForgedServicesRefused(t *testing.T) {
	t.Parallel()
	cut := newNetCut()
	tun := cut.tunables()
	a := startNodeTun(t, "a", tun, nil)
	b := startNodeTun(t, "b", tun, seeds(a))
	c := startNodeTun(t, "c", tun, seeds(a))
	services := manyServices(100, 2, 1)
	big := startNodeTun(t, "big", tun, func(cfg *Config) {
		cfg.Seeds = []string{a.Addr()}
		cfg.Services = services
	})
	all := []*testNode{a, b, c, big}
	waitFor(t, 15*time.Second, liveHas(all, services))

	cut.split([]*testNode{a}, []*testNode{big})
	changed := manyServices(100, 2, 7)
	if err := big.SetServices(changed); err != nil {
		t.Fatal(err)
	}
	body := appendServices(nil, changed)
	d := digestOf(body)
	waitFor(t, 10*time.Second, func() (bool, string) {
		return a.table.wants("big", d), "a does not know big's new digest"
	})
	answer := func(from string, d servicesDigest, body []byte) []byte {
		return append(appendDigest(appendString([]byte{msgServicesResponse}, from), d), body...)
	}
	forged := map[string][]byte{
		"hash mismatch": answer("big", d, append(slices.Clone(body[:len(body)-1]), 'x')),
		"other content": answer("big", d, appendServices(nil, manyServices(100, 2, 8))),
		"truncated":     answer("big", d, body[:len(body)/2]),
		"oversized":     answer("big", d, bytes.Repeat([]byte{1}, maxServicesBytes+1)),
		"no digest":     {msgServicesResponse, 3, 'b', 'i', 'g', 0xff},
		"empty":         {msgServicesResponse},
		"not wanted":    answer("b", d, body), // b's services are inline
	}
	for name, msg := range forged {
		a.receive(msg)
		if ok, why := liveHas([]*testNode{a}, services)(); !ok {
			t.Errorf("%s: changed a's view: %s", name, why)
		}
	}
	if lines := a.logs.lines("refused services answer"); len(lines) != 1 {
		t.Errorf("%d refusal lines, want 1 (rate-limited): %q", len(lines), lines)
	}
	waitFor(t, 15*time.Second, liveHas([]*testNode{b, c, big}, changed))
	if ok, why := liveHas([]*testNode{a}, services)(); !ok {
		t.Errorf("a, cut off from big: %s", why)
	}
	cut.heal()
	waitFor(t, 15*time.Second, liveHas(all, changed))
}

// TestMemberTableKeepsVerifiedServices: a member that advertises new
// services by digest keeps the ones verified before until the new ones
// are filled in, whatever its flags do meanwhile.
func TestMemberTableKeepsVerifiedServices(t *testing.T) {
	tab := newMemberTable("self", time.Hour, 0)
	now := time.Now()
	first := manyServices(3, 1, 1)
	second := manyServices(3, 1, 2)
	d1, d2 := digestOf(appendServices(nil, first)), digestOf(appendServices(nil, second))

	tab.record("x", "127.0.0.1:1", &meta{Digest: d1}, false, now)
	if live := tab.live(); len(live) != 0 {
		t.Fatalf("services before they were fetched: %v", live)
	}
	if !tab.wants("x", d1) || len(tab.wantedServices()) != 1 {
		t.Fatal("x's services not wanted")
	}
	if tab.fillServices("x", d2, second) {
		t.Error("filled services with a digest x does not advertise")
	}
	if !tab.fillServices("x", d1, first) || !equalServices(tab.live(), first) {
		t.Fatalf("live = %v, want %v", tab.live(), first)
	}
	if tab.wants("x", d1) || len(tab.wantedServices()) != 0 {
		t.Error("x's services still wanted once held")
	}

	tab.record("x", "127.0.0.1:1", &meta{Digest: d2}, false, now)
	if !equalServices(tab.live(), first) {
		t.Errorf("while fetching: live = %v, want the verified %v", tab.live(), first)
	}
	tab.record("x", "127.0.0.1:1", &meta{Digest: d2, Draining: true}, false, now)
	if live := tab.live(); len(live) != 0 {
		t.Errorf("draining while fetching: live = %v, want none", live)
	}
	tab.record("x", "127.0.0.1:1", &meta{Digest: d2}, false, now)
	if !tab.fillServices("x", d2, second) || !equalServices(tab.live(), second) {
		t.Errorf("live = %v, want %v", tab.live(), second)
	}
	// Another member with the same services needs no fetch.
	tab.record("y", "127.0.0.1:2", &meta{Digest: d2}, false, now)
	if tab.wants("y", d2) {
		t.Error("y's services wanted though x holds the same")
	}
}

func TestAdvertise(t *testing.T) {
	small := meta{Fingerprint: "fp", Version: "v1", Services: map[string][]string{"web": {"h:1", "i:2"}}}
	m, b, services, err := advertise(small)
	// Byte for byte as before services could go outside the metadata.
	want := []byte{'R', 1, 0, 2, 'f', 'p', 2, 'v', '1', 1, 3, 'w', 'e', 'b', 2, 3, 'h', ':', '1', 3, 'i', ':', '2'}
	if err != nil || services != nil || m.Digest != (servicesDigest{}) || !bytes.Equal(b, want) {
		t.Errorf("small: %q, %v, %v; want %q inline", b, services, err, want)
	}

	for _, n := range []int{100, 200, maxServices} {
		s := manyServices(n, 2, 1)
		m, b, services, err := advertise(meta{Fingerprint: strings.Repeat("f", 64), Version: "v1.2.3", Services: s})
		if err != nil {
			t.Fatalf("%d services: %v", n, err)
		}
		if len(b) > memberlist.MetaMaxSize || m.Digest != digestOf(services) {
			t.Fatalf("%d services: %d bytes of metadata, digest %v", n, len(b), m.Digest)
		}
		got, err := decodeMeta(b)
		if err != nil || got.Services != nil || got.Digest != m.Digest {
			t.Fatalf("%d services: decoded %+v, %v", n, got, err)
		}
		// A node of an older release ignores flag 4 and the bytes after
		// the services, as this one does with flag 4 cleared: it reads
		// the node as serving none.
		older := slices.Clone(b)
		older[2] &^= flagServicesDigest
		old, err := decodeMeta(older)
		if err != nil || old.Services != nil || old.Digest != (servicesDigest{}) || old.Fingerprint != m.Fingerprint {
			t.Fatalf("%d services: as an older node reads it: %+v, %v", n, old, err)
		}
		back, err := decodeServices(services, got.Digest)
		if err != nil || !equalServices(back, s) {
			t.Fatalf("%d services: services decode to %d, %v", n, len(back), err)
		}
		t.Logf("%d services x 2: %d bytes of metadata, %d of services", n, len(b), len(services))
	}

	long := make([]string, 1000)
	for i := range long {
		long[i] = fmt.Sprintf("%s-%d.example.com:8080", strings.Repeat("h", 60), i)
	}
	for name, tc := range map[string]struct {
		services map[string][]string
		limit    string
	}{
		"services":  {manyServices(maxServices+1, 1, 1), "1024 services"},
		"instances": {manyServices(1000, 5, 1), "4096 instances"},
		"bytes":     {map[string][]string{"web": long}, "65536 bytes"},
	} {
		_, _, _, err := advertise(meta{Services: tc.services})
		if err == nil || !strings.Contains(err.Error(), tc.limit) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: err = %v, want one line naming %q", name, err, tc.limit)
		}
	}
}

func TestDecodeServicesRejects(t *testing.T) {
	valid := appendServices(nil, manyServices(100, 2, 1))
	d := digestOf(valid)
	cases := map[string]struct {
		b []byte
		d servicesDigest
	}{
		"hash mismatch": {append(slices.Clone(valid[:len(valid)-1]), '9'), d},
		"truncated":     {valid[:len(valid)-3], digestOf(valid[:len(valid)-3])},
		"trailing":      {append(slices.Clone(valid), 0), digestOf(append(slices.Clone(valid), 0))},
		"oversized":     {bytes.Repeat([]byte{0}, maxServicesBytes+1), digestOf(bytes.Repeat([]byte{0}, maxServicesBytes+1))},
		"bad instance":  {appendServices(nil, map[string][]string{"web": {"nohost"}}), digestOf(appendServices(nil, map[string][]string{"web": {"nohost"}}))},
	}
	for name, tc := range cases {
		if s, err := decodeServices(tc.b, tc.d); err == nil {
			t.Errorf("%s: decoded %d services, want an error", name, len(s))
		}
	}
	if _, err := decodeServices(valid, d); err != nil {
		t.Errorf("valid: %v", err)
	}
}

func FuzzDecodeServices(f *testing.F) {
	f.Add(appendServices(nil, manyServices(30, 2, 1)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeServices(b, digestOf(b))
		if err != nil {
			return
		}
		again := appendServices(nil, s)
		back, err := decodeServices(again, digestOf(again))
		if err != nil || !equalServices(s, back) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
