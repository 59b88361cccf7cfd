package httpapi

import (
	"encoding/json"
	"encoding/xml"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The status page as a browser without JavaScript gets it: the server's
// HTML, parsed, compared with what the JSON routes of the same node answer.
// test/ui checks it in Chromium, with and without JavaScript.

func TestUIShowsTheClusterWithoutJavaScript(t *testing.T) {
	f := newFixture(t, "")
	if _, err := f.table.Set("shop.example.com", "10.0.0.5:3000"); err != nil {
		t.Fatal(err)
	}
	code, hdr, body := f.do(t, "GET", "/ui", "")
	if code != 200 || hdr.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /ui = %d %s", code, hdr.Get("Content-Type"))
	}
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q: want scripts from the page's own origin only", csp)
	}
	page := parseHTML(t, body)

	var members []Member
	f.getJSON(t, "/v1/members", &members)
	var want [][]string
	for _, m := range members {
		want = append(want, []string{m.Name, m.Addr, m.Status, servicesText(m.Services), m.Version})
	}
	if got := page.byID("members").rows(); !equalRows(got, want) {
		t.Errorf("members table %q, /v1/members says %q", got, want)
	}
	if want[0][3] != "web: 127.0.0.1:9001, 127.0.0.1:9002, 127.0.0.1:9003" {
		t.Errorf("services cell %q", want[0][3])
	}

	var rings map[string]Ring
	f.getJSON(t, "/v1/rings", &rings)
	figures := page.byID("rings").all(func(n *node) bool { return n.name == "figure" })
	if len(figures) != len(rings) {
		t.Fatalf("%d rings on the page, /v1/rings has %d", len(figures), len(rings))
	}
	for i, service := range slices.Sorted(maps.Keys(rings)) {
		fig := figures[i]
		if fig.attr["data-service"] != service || !strings.Contains(fig.text(), service) {
			t.Errorf("ring %d is %q, want %q", i, fig.attr["data-service"], service)
		}
		var want [][]string
		for _, in := range rings[service].Instances {
			want = append(want, []string{in.Instance, strconv.FormatFloat(in.Weight, 'g', -1, 64), strconv.Itoa(in.Partitions), strconv.FormatFloat(in.Share*100, 'f', 1, 64) + " %"})
		}
		if got := fig.rows(); !equalRows(got, want) {
			t.Errorf("%s ring table %q, /v1/rings says %q", service, got, want)
		}
	}

	var overrides []Override
	f.getJSON(t, "/entries.json", &overrides)
	got := page.byID("overrides").rows()
	if len(overrides) != 1 || !equalRows(got, [][]string{{"shop.example.com", "10.0.0.5:3000", overrides[0].UpdatedAt.UTC().Format("2006-01-02 15:04:05 UTC"), "api-test"}}) {
		t.Errorf("overrides table %q, /entries.json says %+v", got, overrides)
	}

	if ans := page.byID("answer"); ans.text() != "" {
		t.Errorf("an answer without a lookup: %q", ans.text())
	}
	if n := page.input("n"); n != strconv.Itoa(uiCandidates) {
		t.Errorf("candidates field = %q, want %d", n, uiCandidates)
	}
}

func TestUILookupForm(t *testing.T) {
	f := newFixture(t, "")
	if _, err := f.table.Set("shop.example.com", "10.0.0.5:3000"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		query string
		code  int // of /ui; the message is /v1/lookup's
	}{
		{"key=/a/b&n=3", 200},
		{"key=/a/b&service=web&n=8", 200},
		{"key=/a/b", 200},
		{"key=Shop.Example.com:8080/cart&n=3", 200},
		{"key=/a/b&service=thumbs", 200}, // no answer is an answer of the page
		{"key=/a/b&n=9", 400},
		{"key=/a/b&n=x", 400},
		{"key=", 400},
	}
	for _, tt := range tests {
		code, _, body := f.do(t, "GET", "/ui?"+tt.query, "")
		if code != tt.code {
			t.Errorf("/ui?%s: status %d, want %d", tt.query, code, tt.code)
		}
		page := parseHTML(t, body)
		ans := page.byID("answer")
		apiCode, _, apiBody := f.do(t, "GET", "/v1/lookup?"+tt.query, "")
		if apiCode != 200 {
			var e Error
			json.Unmarshal([]byte(apiBody), &e)
			if got := ans.class("problem").text(); got != e.Error {
				t.Errorf("/ui?%s says %q, /v1/lookup says %q", tt.query, got, e.Error)
			}
			continue
		}
		var l Lookup
		json.Unmarshal([]byte(apiBody), &l)
		var cands []string
		for _, li := range ans.class("candidates").all(func(n *node) bool { return n.name == "li" }) {
			cands = append(cands, li.text())
		}
		if owner := ans.class("owner").text(); owner != l.Backend || !slices.Equal(cands, l.Candidates) ||
			ans.class("source").text() != "from the "+l.Source || !strings.HasPrefix(ans.text(), l.Key+" on "+l.Service+":") {
			t.Errorf("/ui?%s answers %q, candidates %q; /v1/lookup says %+v", tt.query, ans.text(), cands, l)
		}
		// The form shows what was asked, for the next lookup.
		if key := page.input("key"); !strings.Contains(tt.query, "key="+key) {
			t.Errorf("/ui?%s: key field = %q", tt.query, key)
		}
	}
}

func TestUIEscapesWhatUsersSend(t *testing.T) {
	f := newFixture(t, "")
	key := `<script>alert(1)</script>"'&/x`
	service := `"><img src=x onerror=alert(2)>`
	code, _, body := f.do(t, "GET", "/ui?key="+urlEscape(key)+"&service="+urlEscape(service), "")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	for _, raw := range []string{"<script>alert", "<img src=x", `"><img`} {
		if strings.Contains(body, raw) {
			t.Errorf("the page contains %q unescaped", raw)
		}
	}
	page := parseHTML(t, body)
	if got := page.input("key"); got != key {
		t.Errorf("key field = %q, want %q as typed", got, key)
	}
	if got := page.input("service"); got != service {
		t.Errorf("service field = %q, want %q as typed", got, service)
	}
	if p := page.byID("answer").class("problem").text(); !strings.Contains(p, service) {
		t.Errorf("problem %q does not name the service as typed", p)
	}
	// In the browser, data reaches the DOM only as text.
	js, _ := uiFiles.ReadFile("ui/ui.js")
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
		if strings.Contains(string(js), sink) {
			t.Errorf("ui.js uses %s", sink)
		}
	}
}

// The page must work on a node with --api-token: it is served, and it
// fetches only routes that are open to GET without the token (so never
// /v1/keys, which shows secrets).
func TestUIWorksWithAToken(t *testing.T) {
	f := newFixture(t, "s3cret")
	for _, path := range []string{"/ui", "/ui/ui.js", "/ui/ui.css", "/ui?key=/a/b"} {
		if code, _, body := f.do(t, "GET", path, ""); code != 200 {
			t.Errorf("GET %s without the token = %d %.200s", path, code, body)
		}
	}
	js, _ := uiFiles.ReadFile("ui/ui.js")
	fetched := regexp.MustCompile(`"(/(?:v1/[a-z]+|entries\.json)[^"]*)"`).FindAllStringSubmatch(string(js), -1)
	if len(fetched) < 4 {
		t.Fatalf("ui.js fetches %q; expected members, rings, overrides and lookups", fetched)
	}
	for _, m := range fetched {
		path := strings.TrimSuffix(m[1], "?") + "?key=/a/b"
		if code, _, body := f.do(t, "GET", path, ""); code != 200 {
			t.Errorf("ui.js fetches %s, which answers %d without the token: %.200s", m[1], code, body)
		}
	}
}

func TestUIAssets(t *testing.T) {
	f := newFixture(t, "")
	for _, tc := range []struct{ path, ctype string }{
		{"/ui/ui.css", "text/css; charset=utf-8"},
		{"/ui/ui.js", "text/javascript; charset=utf-8"},
	} {
		code, hdr, body := f.do(t, "GET", tc.path, "")
		if code != 200 || hdr.Get("Content-Type") != tc.ctype || hdr.Get("ETag") == "" || len(body) == 0 {
			t.Errorf("GET %s = %d %q ETag %q, %d bytes", tc.path, code, hdr.Get("Content-Type"), hdr.Get("ETag"), len(body))
			continue
		}
		if code, _, _ := f.do(t, "GET", tc.path, "", "If-None-Match", hdr.Get("ETag")); code != http.StatusNotModified {
			t.Errorf("GET %s with its ETag = %d, want 304", tc.path, code)
		}
	}
	for _, path := range []string{"/ui/index.html", "/ui/nope.js", "/ui/"} {
		if code, hdr, _ := f.do(t, "GET", path, ""); code != 404 || hdr.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s = %d %s, want a JSON 404", path, code, hdr.Get("Content-Type"))
		}
	}
	_, _, index := f.do(t, "GET", "/", "")
	if !strings.Contains(index, "GET /ui ") {
		t.Errorf("GET / does not list the status page:\n%s", index)
	}
}

func TestUIWithoutOverrideTable(t *testing.T) {
	f := newFixture(t, "")
	srv := httptest.NewServer(New(Config{Router: f.router, Cluster: f.node}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/ui")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	page := parseHTML(t, string(body))
	if resp.StatusCode != 200 || !strings.Contains(page.byID("overrides").text(), "without an override table") || len(page.byID("members").rows()) != 1 {
		t.Errorf("GET /ui without overrides = %d, overrides %q", resp.StatusCode, page.byID("overrides").text())
	}
}

func (f *fixture) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	code, _, body := f.do(t, "GET", path, "")
	if code != 200 {
		t.Fatalf("GET %s = %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

func urlEscape(s string) string {
	return strings.NewReplacer("%", "%25", "&", "%26", "#", "%23", "+", "%2B", " ", "%20", "<", "%3C", ">", "%3E", `"`, "%22", "'", "%27").Replace(s)
}

func equalRows(a, b [][]string) bool {
	return slices.EqualFunc(a, b, func(x, y []string) bool { return slices.Equal(x, y) })
}

// node is an element of a parsed page: enough of a DOM to read tables,
// fields and text the way a user sees them.
type node struct {
	name     string
	attr     map[string]string
	children []*node
	texts    []string // text directly inside, in order, interleaved with children
}

// parseHTML parses the page with encoding/xml in its lenient HTML mode
// (void elements, HTML entities); html/template's output is regular
// enough for it.
func parseHTML(t *testing.T, body string) *node {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(body))
	d.Strict, d.AutoClose, d.Entity = false, xml.HTMLAutoClose, xml.HTMLEntity
	root := &node{name: "#document"}
	stack := []*node{root}
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return root
		}
		if err != nil {
			t.Fatalf("parse the page: %v\n%s", err, body)
		}
		top := stack[len(stack)-1]
		switch tok := tok.(type) {
		case xml.StartElement:
			n := &node{name: tok.Name.Local, attr: map[string]string{}}
			for _, a := range tok.Attr {
				n.attr[a.Name.Local] = a.Value
			}
			top.children = append(top.children, n)
			top.texts = append(top.texts, "\x00") // where the child goes
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			top.texts = append(top.texts, string(tok))
		}
	}
}

// text is the element's text content, whitespace collapsed.
func (n *node) text() string {
	if n == nil {
		return ""
	}
	var b strings.Builder
	var walk func(*node)
	walk = func(n *node) {
		child := 0
		for _, s := range n.texts {
			if s == "\x00" {
				walk(n.children[child])
				child++
				continue
			}
			b.WriteString(s)
		}
	}
	walk(n)
	return strings.Join(strings.Fields(b.String()), " ")
}

// all returns the descendants that match, in document order.
func (n *node) all(match func(*node) bool) []*node {
	if n == nil {
		return nil
	}
	var out []*node
	for _, c := range n.children {
		if match(c) {
			out = append(out, c)
		}
		out = append(out, c.all(match)...)
	}
	return out
}

func (n *node) first(match func(*node) bool) *node {
	if all := n.all(match); len(all) > 0 {
		return all[0]
	}
	return nil
}

func (n *node) byID(id string) *node {
	return n.first(func(c *node) bool { return c.attr["id"] == id })
}

func (n *node) class(class string) *node {
	return n.first(func(c *node) bool { return slices.Contains(strings.Fields(c.attr["class"]), class) })
}

// input is the value of the form field with that name.
func (n *node) input(name string) string {
	if in := n.first(func(c *node) bool { return c.name == "input" && c.attr["name"] == name }); in != nil {
		return in.attr["value"]
	}
	return ""
}

// rows are the cells' text of each body row that has data (the rows of
// tbody elements, without placeholder rows such as "No overrides.").
func (n *node) rows() [][]string {
	var out [][]string
	for _, tbody := range n.all(func(c *node) bool { return c.name == "tbody" }) {
		for _, tr := range tbody.all(func(c *node) bool { return c.name == "tr" }) {
			var cells []string
			for _, td := range tr.children {
				if td.name == "td" {
					cells = append(cells, td.text())
				}
			}
			if len(cells) == 1 && tr.first(func(c *node) bool { return c.attr["colspan"] != "" }) != nil {
				continue
			}
			out = append(out, cells)
		}
	}
	return out
}
