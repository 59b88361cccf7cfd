package httpapi

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"ringman/router"
)

// The status page, GET /ui. The server renders it whole with html/template
// (members, rings as tables, overrides, and the answer to the lookup form,
// a plain GET of /ui?key=...), so it is useful without JavaScript. ui.js
// then draws the rings and refreshes the page every 2 s from the same JSON
// routes a script would use (only open GET routes, so it works with
// --api-token). The assets are embedded: no build step, nothing from
// elsewhere.

//go:embed ui/index.html ui/ui.css ui/ui.js
var uiFiles embed.FS

// uiCandidates is how many candidates the lookup form asks for by default.
const uiCandidates = 3

// uiCSP allows the page its own stylesheet, script and API, and nothing
// else: no inline script, no other origin, no framing.
const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

var uiTemplate = template.Must(template.New("index.html").Funcs(template.FuncMap{
	"percent":  percent,
	"weight":   formatWeight,
	"services": servicesText,
	"utc":      func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
}).ParseFS(uiFiles, "ui/index.html"))

// uiAsset is an embedded file with what its answer needs.
type uiAsset struct {
	body        []byte
	contentType string
	etag        string
}

var uiAssets = map[string]uiAsset{
	"ui.css": loadAsset("ui.css", "text/css; charset=utf-8"),
	"ui.js":  loadAsset("ui.js", "text/javascript; charset=utf-8"),
}

func loadAsset(name, contentType string) uiAsset {
	body, err := uiFiles.ReadFile("ui/" + name)
	if err != nil {
		panic(err) // embedded at build time: cannot happen
	}
	sum := sha256.Sum256(body)
	return uiAsset{body: body, contentType: contentType, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
}

// uiPage is what index.html renders.
type uiPage struct {
	Rendered       time.Time
	Members        []Member
	Rings          []uiRing
	Overrides      []Override
	HasOverrides   bool // false: the node runs without an override table
	Services       []string
	DefaultService string
	MaxCandidates  int
	Form           uiForm
	Answer         *Lookup
	Problem        string // why the lookup has no answer
}

type uiRing struct {
	Service string
	Ring
}

// uiForm is the lookup form as submitted, shown back in its fields.
type uiForm struct{ Key, Service, N string }

// ui is GET /ui: the status page, with the answer to ?key=K&service=S&n=N
// when the lookup form was submitted. A lookup with no answer is shown on
// the page (200); malformed input answers 400 with the page and why.
func (a *api) ui(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := uiPage{
		Rendered:       time.Now(),
		Members:        a.memberList(),
		DefaultService: a.Router.DefaultService(),
		MaxCandidates:  router.MaxCandidates,
		Form:           uiForm{Key: q.Get("key"), Service: q.Get("service"), N: q.Get("n")},
	}
	rings := a.ringList()
	for _, service := range slices.Sorted(maps.Keys(rings)) {
		p.Rings = append(p.Rings, uiRing{service, rings[service]})
		p.Services = append(p.Services, service)
	}
	if !slices.Contains(p.Services, p.DefaultService) {
		p.Services = append(p.Services, p.DefaultService)
		slices.Sort(p.Services)
	}
	if a.Overrides != nil {
		p.HasOverrides = true
		p.Overrides = a.overrideList()
	}
	status := http.StatusOK
	if q.Has("key") {
		l, code, err := a.lookupKey(p.Form.Key, p.Form.Service, p.Form.N)
		switch {
		case err == nil:
			p.Answer = &l
		case code == http.StatusNotFound:
			p.Problem = err.Error()
		default:
			status, p.Problem = code, err.Error()
		}
	}
	if p.Form.N == "" {
		p.Form.N = strconv.Itoa(uiCandidates)
	}
	var buf bytes.Buffer
	if err := uiTemplate.Execute(&buf, p); err != nil {
		a.Logger.Error("rendering the status page failed", "err", err)
		writeError(w, http.StatusInternalServerError, "rendering the status page failed: %v", err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", uiCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// uiAsset is GET /ui/{asset}: the page's stylesheet and script. They are
// revalidated on every load (ETag), so a new binary's take effect at once.
func (a *api) uiAsset(w http.ResponseWriter, r *http.Request) {
	asset, ok := uiAssets[r.PathValue("asset")]
	if !ok {
		writeError(w, http.StatusNotFound, "%s: no such asset of the status page", r.URL.Path)
		return
	}
	h := w.Header()
	h.Set("Content-Type", asset.contentType)
	h.Set("ETag", asset.etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(asset.body))
}

// The data behind GET /v1/members, /v1/rings, /v1/lookup and /entries.json,
// shared by those routes and the status page so that both always say the
// same thing.

// memberList is every member as GET /v1/members answers it.
func (a *api) memberList() []Member {
	ms := a.Cluster.Members()
	out := make([]Member, 0, len(ms))
	for _, m := range ms {
		services := m.Services
		if services == nil {
			services = map[string][]string{}
		}
		member := Member{Name: m.Name, Addr: m.Addr, Status: string(m.Status), Services: services, Version: m.Version, CheckFailing: m.CheckFailing}
		if m.Name == a.Cluster.Name() {
			member.Check = a.check()
		}
		out = append(out, member)
	}
	return out
}

// check is this node's health check as /v1/members shows it; nil without one.
func (a *api) check() *MemberCheck {
	st, ok := a.Cluster.CheckState()
	if !ok {
		return nil
	}
	c := &MemberCheck{URL: st.URL, State: "failing", Passes: st.Passes, Failures: st.Failures,
		Since: st.Since, Checked: st.Checked, LastError: st.LastError}
	if st.Passing {
		c.State = "passing"
	}
	if !st.LastErrorAt.IsZero() {
		c.LastErrorAt = &st.LastErrorAt
	}
	return c
}

// ringList is every service's ring as GET /v1/rings answers it, instances
// sorted.
func (a *api) ringList() map[string]Ring {
	out := map[string]Ring{}
	for service, rg := range a.Router.Rings() {
		owned := rg.Owned()
		ri := Ring{Partitions: rg.Partitions(), Instances: []RingInstance{}}
		for _, in := range rg.Describe() {
			share := 0.0
			if rg.Partitions() > 0 {
				share = float64(owned[in.Addr]) / float64(rg.Partitions())
			}
			ri.Instances = append(ri.Instances, RingInstance{Instance: in.Addr, ID: in.ID, Weight: in.Weight, Partitions: owned[in.Addr], Share: share})
		}
		slices.SortFunc(ri.Instances, func(x, y RingInstance) int { return strings.Compare(x.Instance, y.Instance) })
		out[service] = ri
	}
	return out
}

// lookupKey answers a lookup of key as GET /v1/lookup does, from its
// parameters as given ("" service: the default one; "" n: 1). Without an
// answer it returns the status to send (400 malformed, 404 unknown service
// or no backend) and why.
func (a *api) lookupKey(key, service, n string) (Lookup, int, error) {
	if key == "" {
		a.Lookups.errors.Add(1)
		return Lookup{}, http.StatusBadRequest, fmt.Errorf("key is required (GET /v1/lookup?key=K)")
	}
	count, err := parseN(n)
	if err != nil {
		a.Lookups.errors.Add(1)
		return Lookup{}, http.StatusBadRequest, err
	}
	if service == "" {
		service = a.Router.DefaultService()
	}
	if !a.Router.Known(service) {
		a.Lookups.errors.Add(1)
		return Lookup{}, http.StatusNotFound, unknownService(service)
	}
	cands, src := a.Router.Candidates(service, []byte(key), count)
	a.Lookups.lookups[src].Add(1)
	if src == router.Miss {
		return Lookup{}, http.StatusNotFound, fmt.Errorf("no backend for key %q: service %q has no live instance", key, service)
	}
	return Lookup{Key: key, Service: service, Backend: cands[0], Source: src.String(), Candidates: cands}, http.StatusOK, nil
}

// parseN reads the n of /v1/lookup and /v1/route: absent or empty is 1.
func parseN(n string) (int, error) {
	if n == "" {
		return 1, nil
	}
	count, ok := router.ParseCandidates(n)
	if !ok {
		return 0, fmt.Errorf("n must be %s, got %q", router.CandidatesRule, n)
	}
	return count, nil
}

// unknownService is the error of a lookup on a service the router does not
// know (router.Known), told apart from one with no live instance.
func unknownService(service string) error {
	return fmt.Errorf("unknown service %q: it is not the default service, no --db maps to it, and no member has advertised it since this node started", service)
}

// overrideList is every override as GET /entries.json answers it. The
// node must have an override table.
func (a *api) overrideList() []Override {
	entries := a.Overrides.List()
	out := make([]Override, len(entries))
	for i, e := range entries {
		out[i] = overrideOf(e)
	}
	return out
}

// formatWeight writes a weight as the page's script does (JavaScript's
// String): "2", "0.3".
func formatWeight(w float64) string { return strconv.FormatFloat(w, 'g', -1, 64) }

// percent writes a share (0..1) as the page shows it: "33.3 %".
func percent(share float64) string {
	return strconv.FormatFloat(share*100, 'f', 1, 64) + " %"
}

// servicesText writes a member's services as the page shows them:
// "thumbs: 10.0.0.1:81; web: 10.0.0.1:80, 10.0.0.1:8080".
func servicesText(services map[string][]string) string {
	parts := make([]string, 0, len(services))
	for _, name := range slices.Sorted(maps.Keys(services)) {
		parts = append(parts, name+": "+strings.Join(services[name], ", "))
	}
	return strings.Join(parts, "; ")
}
