//go:build linux

// Package ui tests the status page (GET /ui) as an operator sees it: in
// Debian's headless Chromium, driven over the DevTools protocol
// (cdp_test.go), against a running 3-node cluster of real `ringman serve`
// processes with an API token. Every check compares what the page shows
// with what the JSON API of the same node answers.
//
// Chromium is $RINGMAN_CHROMIUM, else chromium in PATH or /usr/bin; the
// test skips when there is none. Screenshots go to $RINGMAN_ARTIFACTS
// (default: the test's temporary directory).
package ui

import (
	"context"
	"fmt"
	"maps"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"ringman/httpapi"
	"ringman/test/cluster"
)

const token = "ui-test-token"

var (
	bin      string
	buildErr error
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var cleanup func()
	var err error
	bin, buildErr, cleanup, err = cluster.BuildOnce("ringman-ui-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "ui:", err)
		return 1
	}
	defer cleanup()
	return m.Run()
}

// chromium returns the browser to drive, or skips the test.
func chromium(t *testing.T) string {
	if p := os.Getenv("RINGMAN_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "/usr/bin/chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("Chromium not found ($RINGMAN_CHROMIUM, chromium in PATH or /usr/bin): `apt-get install chromium` (make test-deps does) to run the status page test")
	return ""
}

func TestStatusPage(t *testing.T) {
	chrome := chromium(t)
	if buildErr != nil {
		t.Fatalf("cannot build the ringman binary: %v", buildErr)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	// Three nodes: each fronts a web instance, two also a thumbs one.
	c := cluster.New(bin, t.TempDir())
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("node logs:\n%s", c.Logs())
		}
	})
	ports, err := cluster.FreePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	inst := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	web := []string{inst(0), inst(1), inst(2)}
	var nodes []*cluster.Node
	for i := range 3 {
		cfg := cluster.NodeConfig{Name: fmt.Sprintf("ui%d", i+1), Services: []string{"web=" + web[i]}, Args: []string{"--api-token", token}}
		if i < 2 {
			cfg.Services = append(cfg.Services, "thumbs="+inst(3+i))
		}
		if i > 0 {
			cfg.Join = []string{nodes[0].GossipAddr}
		}
		n, err := c.Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	if err := cluster.WaitInstances(ctx, nodes, web); err != nil {
		t.Fatal(err)
	}
	api := client(t, nodes[0])
	if _, err := api.SetHost(ctx, "shop.example.com", web[1]); err != nil {
		t.Fatal(err)
	}
	// Set on another node: it reaches the page's node by gossip.
	if _, err := client(t, nodes[1]).SetHost(ctx, "*.beta.example.com", "10.0.0.9:3000"); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "ui1 has both overrides and a thumbs ring of 2", func() (bool, string) {
		hosts, err := api.Hosts(ctx)
		if err != nil || len(hosts) != 2 {
			return false, fmt.Sprintf("overrides %v, %v", hosts, err)
		}
		rings, err := api.Rings(ctx)
		return err == nil && len(rings["thumbs"].Instances) == 2, fmt.Sprintf("rings %v, %v", rings, err)
	})

	b, err := startBrowser(chrome, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.close()
		if t.Failed() {
			t.Logf("chromium output:\n%s", b.logTail())
		}
	})
	artifacts := os.Getenv("RINGMAN_ARTIFACTS")
	if artifacts == "" {
		artifacts = t.TempDir()
	} else if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	shoot := func(p *page, name string) {
		t.Helper()
		path := filepath.Join(artifacts, name)
		if err := p.screenshot(ctx, path); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
	}
	base := "http://" + nodes[0].HTTPAddr + "/ui"

	// With JavaScript: the drawn page matches the API, and the lookup box
	// answers in place.
	p, err := b.newPage(ctx, 1280, 900)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.navigate(ctx, base); err != nil {
		t.Fatal(err)
	}
	s := waitPage(t, ctx, p, api, "the page drawn by its script", func(s snapshot) string {
		if !s.JS {
			return "ui.js has not run (no class js on <html>)"
		}
		return ""
	})
	t.Logf("members %v, rings %d, overrides %d", s.Members, len(s.Rings), len(s.Overrides))

	for _, key := range []string{"/img/42.jpg", "Shop.Example.com:8080/cart"} {
		submit := fmt.Sprintf(`(() => {
			const f = document.querySelector("#lookup-form");
			f.elements.key.value = %q; f.elements.service.value = "web"; f.elements.n.value = "3";
			f.querySelector("button[type=submit]").click();
		})()`, key)
		if err := p.eval(ctx, submit, nil); err != nil {
			t.Fatal(err)
		}
		s = waitLookup(t, ctx, p, api, key)
		want := "/ui?" + url.Values{"key": {key}, "n": {"3"}, "service": {"web"}}.Encode()
		if !sameQuery(s.Location, want) {
			t.Errorf("after the lookup the address is %s, want %s (so that a reload keeps it)", s.Location, want)
		}
	}
	// The page goes on refreshing; the box keeps what was typed.
	r0 := s.Refreshes
	s = waitPage(t, ctx, p, api, "two more refreshes", func(s snapshot) string {
		if s.Refreshes < r0+2 {
			return fmt.Sprintf("%d refreshes, want %d", s.Refreshes, r0+2)
		}
		return ""
	})
	if s.Form.Key != "Shop.Example.com:8080/cart" || s.Form.Service != "web" || s.Form.N != "3" || s.Answer.Owner != web[1] {
		t.Errorf("after refreshes the lookup box holds %+v and answers %+v, want the last lookup kept", s.Form, s.Answer)
	}
	shoot(p, "ui.png")

	// Without JavaScript: plain tables, and the lookup answered by the server.
	nojs, err := b.newPage(ctx, 1280, 900)
	if err != nil {
		t.Fatal(err)
	}
	if err := nojs.call(ctx, "Emulation.setScriptExecutionDisabled", map[string]any{"value": true}, nil); err != nil {
		t.Fatal(err)
	}
	if err := nojs.navigate(ctx, base+"?key=%2Fimg%2F7.jpg&service=web&n=2"); err != nil {
		t.Fatal(err)
	}
	s = waitLookup(t, ctx, nojs, api, "/img/7.jpg")
	if s.JS || len(s.Rings) != 2 || len(s.Rings[0].Legend) == 0 {
		t.Errorf("without JavaScript: js=%v, rings %+v; want the server's ring tables only", s.JS, s.Rings)
	}
	// The form is a plain GET: typing and pressing the button asks the server.
	submit := `(() => {
		const f = document.querySelector("#lookup-form");
		f.elements.key.value = "x.beta.example.com/a"; f.elements.n.value = "1";
		f.querySelector("button[type=submit]").click();
	})()`
	if err := nojs.eval(ctx, submit, nil); err != nil {
		t.Fatal(err)
	}
	s = waitLookup(t, ctx, nojs, api, "x.beta.example.com/a")
	if s.Answer.Owner != "10.0.0.9:3000" || !strings.Contains(s.Answer.Source, "override") {
		t.Errorf("no-JS lookup of an overridden host: %+v, want 10.0.0.9:3000 from the override", s.Answer)
	}
	shoot(nojs, "ui-nojs.png")
	if errs := nojs.errors(); errs != "" {
		t.Errorf("the page without JavaScript logged errors:\n%s", errs)
	}

	// Draining ui3 shows on the open page without a reload. The page
	// pauses while hidden, so bring its tab to the front again.
	if err := p.call(ctx, "Page.bringToFront", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.eval(ctx, "window.ringmanTestMarker = 1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := client(t, nodes[2]).Drain(ctx, true); err != nil {
		t.Fatal(err)
	}
	s = waitPage(t, ctx, p, api, "ui3 draining on the page", func(s snapshot) string {
		for _, row := range s.Members {
			if row[0] == "ui3" && row[2] == "draining" {
				return ""
			}
		}
		return fmt.Sprintf("members %v", s.Members)
	})
	if !s.Marker {
		t.Error("the page was reloaded to show the drain, want it updated in place")
	}
	if got := len(s.Rings[slices.IndexFunc(s.Rings, func(r ringView) bool { return r.Service == "web" })].Arcs); got != 2 {
		t.Errorf("web ring after the drain has %d arcs, want 2", got)
	}
	shoot(p, "ui-drained.png")
	if errs := p.errors(); errs != "" {
		t.Errorf("the page logged errors:\n%s", errs)
	}
}

func client(t *testing.T, n *cluster.Node) *httpapi.Client {
	c, err := httpapi.NewClient(n.HTTPAddr, token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func poll(t *testing.T, ctx context.Context, what string, cond func() (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := cluster.Poll(ctx, 100*time.Millisecond, what, cond); err != nil {
		t.Fatal(err)
	}
}

// snapshot is what the page shows, read from its DOM by readPage.
type snapshot struct {
	JS        bool       `json:"js"`
	Refreshes int        `json:"refreshes"`
	Location  string     `json:"location"`
	Members   [][]string `json:"members"`
	Rings     []ringView `json:"rings"`
	Overrides [][]string `json:"overrides"`
	Form      struct{ Key, Service, N string }
	Answer    struct {
		Text, Owner, Source, Problem string
		Candidates                   []string
	}
	Marker bool `json:"marker"`
}

type ringView struct {
	Service string     `json:"service"`
	Legend  [][]string `json:"legend"`
	Arcs    []struct {
		Instance   string  `json:"instance"`
		Partitions int     `json:"partitions"`
		Dash       string  `json:"dash"`
		Offset     float64 `json:"offset"`
	} `json:"arcs"`
}

// readPage reads what a user sees: table cells as text, and each drawn
// arc's instance, partitions and dash (its length on a circle of 100).
const readPage = `(() => {
	const text = (e) => (e ? e.textContent.trim() : "");
	const rows = (root, sel) => [...root.querySelectorAll(sel)].map((tr) => [...tr.cells].map(text));
	const f = document.querySelector("#lookup-form");
	return {
		js: document.documentElement.classList.contains("js"),
		refreshes: Number(document.querySelector("#updated").dataset.refreshes || 0),
		location: location.pathname + location.search,
		members: rows(document, "#members tbody tr"),
		rings: [...document.querySelectorAll("#rings figure.ring")].map((fig) => ({
			service: fig.dataset.service,
			legend: rows(fig, ".legend tbody tr"),
			arcs: [...fig.querySelectorAll("svg .arc")].map((a) => ({
				instance: a.dataset.instance, partitions: Number(a.dataset.partitions),
				dash: a.getAttribute("stroke-dasharray"), offset: Number(a.getAttribute("stroke-dashoffset")),
			})),
		})),
		overrides: rows(document, "#overrides tbody tr[data-host]"),
		form: { key: f.elements.key.value, service: f.elements.service.value, n: f.elements.n.value },
		answer: {
			text: text(document.querySelector("#answer")),
			owner: text(document.querySelector("#answer .owner")),
			source: text(document.querySelector("#answer .source")),
			problem: text(document.querySelector("#answer .problem")),
			candidates: [...document.querySelectorAll("#answer .candidates li")].map(text),
		},
		marker: window.ringmanTestMarker === 1,
	};
})()`

// waitPage polls the page until it shows what the node's API answers
// (members, rings, overrides) and extra, if given, has nothing to say.
func waitPage(t *testing.T, ctx context.Context, p *page, api *httpapi.Client, what string, extra func(snapshot) string) snapshot {
	t.Helper()
	var s snapshot
	poll(t, ctx, what+", matching the API", func() (bool, string) {
		s = snapshot{}
		if err := p.eval(ctx, readPage, &s); err != nil {
			return false, err.Error()
		}
		if why := matchAPI(ctx, s, api); why != "" {
			return false, why
		}
		if extra != nil {
			if why := extra(s); why != "" {
				return false, why
			}
		}
		return true, ""
	})
	return s
}

// waitLookup waits until the page answers key as GET /v1/lookup does.
func waitLookup(t *testing.T, ctx context.Context, p *page, api *httpapi.Client, key string) snapshot {
	t.Helper()
	return waitPage(t, ctx, p, api, "the answer for "+key, func(s snapshot) string {
		n, _ := strconv.Atoi(s.Form.N)
		want, err := api.Lookup(ctx, key, s.Form.Service, n)
		if err != nil {
			return err.Error()
		}
		if !strings.HasPrefix(s.Answer.Text, key+" on ") || s.Answer.Owner != want.Backend ||
			!slices.Equal(s.Answer.Candidates, want.Candidates) || s.Answer.Source != "from the "+want.Source {
			return fmt.Sprintf("page answers %+v, /v1/lookup %+v", s.Answer, want)
		}
		return ""
	})
}

// matchAPI says how the page differs from the API, or "".
func matchAPI(ctx context.Context, s snapshot, api *httpapi.Client) string {
	members, err := api.Members(ctx)
	if err != nil {
		return err.Error()
	}
	var want [][]string
	for _, m := range members {
		want = append(want, []string{m.Name, m.Addr, m.Status, servicesText(m.Services), m.Version})
	}
	if !equalRows(s.Members, want) {
		return fmt.Sprintf("members: page %v, API %v", s.Members, want)
	}
	rings, err := api.Rings(ctx)
	if err != nil {
		return err.Error()
	}
	services := slices.Sorted(maps.Keys(rings))
	if len(s.Rings) != len(services) {
		return fmt.Sprintf("page shows %d rings, API has %v", len(s.Rings), services)
	}
	for i, service := range services {
		if why := matchRing(s.Rings[i], service, rings[service], s.JS); why != "" {
			return why
		}
	}
	hosts, err := api.Hosts(ctx)
	if err != nil {
		return err.Error()
	}
	want = nil
	for _, h := range hosts {
		want = append(want, []string{h.Host, h.Backend, h.UpdatedAt.UTC().Format("2006-01-02 15:04:05 UTC"), h.Node})
	}
	if !equalRows(s.Overrides, want) {
		return fmt.Sprintf("overrides: page %v, API %v", s.Overrides, want)
	}
	return ""
}

// matchRing compares one ring on the page with the API's: the legend
// (instance, partitions, share), and with JavaScript the arcs, each as long
// as its instance's share and starting where the previous one ends.
func matchRing(got ringView, service string, want httpapi.Ring, drawn bool) string {
	if got.Service != service {
		return fmt.Sprintf("ring %q on the page, want %q", got.Service, service)
	}
	var legend [][]string
	for _, in := range want.Instances {
		legend = append(legend, []string{in.Instance, strconv.FormatFloat(in.Weight, 'g', -1, 64), strconv.Itoa(in.Partitions), strconv.FormatFloat(in.Share*100, 'f', 1, 64) + " %"})
	}
	if !equalRows(got.Legend, legend) {
		return fmt.Sprintf("%s legend: page %v, API %v", service, got.Legend, legend)
	}
	if !drawn {
		if len(got.Arcs) != 0 {
			return fmt.Sprintf("%s: %d arcs drawn without JavaScript", service, len(got.Arcs))
		}
		return ""
	}
	if len(got.Arcs) != len(want.Instances) {
		return fmt.Sprintf("%s: %d arcs, API has %d instances", service, len(got.Arcs), len(want.Instances))
	}
	start := 0.0
	for i, in := range want.Instances {
		arc := got.Arcs[i]
		length, err := strconv.ParseFloat(strings.Fields(arc.Dash + " x")[0], 64)
		if err != nil || arc.Instance != in.Instance || arc.Partitions != in.Partitions ||
			math.Abs(length-in.Share*100) > 1e-6 || math.Abs(-arc.Offset-start) > 1e-6 {
			return fmt.Sprintf("%s arc %d: %+v, want %s with %d partitions, length %.4f from %.4f", service, i, arc, in.Instance, in.Partitions, in.Share*100, start)
		}
		start += length
	}
	return ""
}

func equalRows(a, b [][]string) bool {
	return slices.EqualFunc(a, b, func(x, y []string) bool { return slices.Equal(x, y) })
}

// servicesText is a member's services as the page writes them.
func servicesText(services map[string][]string) string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(services)) {
		parts = append(parts, name+": "+strings.Join(services[name], ", "))
	}
	return strings.Join(parts, "; ")
}

// sameQuery reports whether two /ui addresses have the same parameters.
func sameQuery(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	if err1 != nil || err2 != nil {
		return false
	}
	return ua.Path == ub.Path && ua.Query().Encode() == ub.Query().Encode()
}
