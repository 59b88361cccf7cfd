// Package httpapi is ringman's HTTP API (README: HTTP API): host overrides (the
// original set_backend project's /entries routes), members, lookups, join,
// leave, drain, rings, health and metrics, JSON everywhere. The CLI is its
// main client (see Client).
package httpapi

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"ringman/discovery"
	"ringman/hostmap"
	"ringman/router"
)

// MaxBody is the largest request body accepted (README: HTTP API).
const MaxBody = 1 << 20

// Cluster is the part of a discovery.Node the API uses.
type Cluster interface {
	Name() string
	Members() []discovery.Member
	// CheckState is the local health check's; false without one.
	CheckState() (discovery.CheckState, bool)
	Join(addrs []string) (int, error)
	SetDraining(on bool) error
	Draining() bool
	SetWeight(service, addr string, weight int) (discovery.Instance, error)
}

// Config wires the API to a node.
type Config struct {
	Router  *router.Router
	Cluster Cluster
	// Overrides is the node's override table, served under /entries; nil
	// answers those routes with 503.
	Overrides *hostmap.Table
	// Token, when set, is required as "Authorization: Bearer <token>" by
	// every request that changes state.
	Token string
	// Keyring changes the gossip keyring of every member (/v1/keys); nil
	// answers those routes with 501.
	Keyring Keyring
	// Leave asks the daemon to leave the cluster gracefully and exit.
	Leave func()
	// Ready reports whether the node has joined and published its rings,
	// and if not, why.
	Ready func() (bool, string)
	// Registry is served on /metrics; nil serves an empty registry.
	Registry *prometheus.Registry
	// Lookups counts the lookups of /v1/lookup and /v1/route, for the
	// caller's metrics; nil: the API counts into one of its own.
	Lookups *LookupCounters
	Logger  *slog.Logger
}

// LookupCounters counts the API's lookups (/v1/lookup and /v1/route) by
// where the answer came from, and the lookup requests answered with an
// error (a missing key, a bad n). Its methods are safe for concurrent use.
type LookupCounters struct {
	lookups [router.NumSources]atomic.Uint64 // by router.Source
	errors  atomic.Uint64
}

// LookupStats is a snapshot of LookupCounters.
type LookupStats struct {
	Lookups [router.NumSources]uint64 // by router.Source; a miss is a 404 (403 for /v1/route)
	Errors  uint64                    // 4xx answers other than a miss
}

// Stats reads the counters.
func (c *LookupCounters) Stats() LookupStats {
	var st LookupStats
	for src := range c.lookups {
		st.Lookups[src] = c.lookups[src].Load()
	}
	st.Errors = c.errors.Load()
	return st
}

type api struct {
	Config
	mux *http.ServeMux
}

// New returns the API handler.
func New(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Lookups == nil {
		cfg.Lookups = &LookupCounters{}
	}
	a := &api{Config: cfg, mux: http.NewServeMux()}
	for _, r := range a.routes() {
		h := r.handler
		if r.changes {
			h = a.authorized(h)
		}
		a.mux.Handle(r.pattern, h)
	}
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	return a
}

type route struct {
	pattern string
	changes bool // needs the token when one is set: it changes state or shows secrets
	doc     string
	handler http.HandlerFunc
}

func (a *api) routes() []route {
	return []route{
		{"GET /{$}", false, "this page", a.index},
		{"GET /ui", false, "status page (HTML): members, rings, overrides, and a lookup box (?key=K&service=S&n=N, answered without JavaScript too)", a.ui},
		{"GET /ui/{asset}", false, "the status page's stylesheet and script", a.uiAsset},
		{"POST /entries.json", true, `{"host":"some.host.com","backend":"10.0.0.5:3000"}: create (201) or replace (200) an override; a JSON array of them imports all or none`, a.setEntries},
		{"GET /entries.json", false, "every override: [{host, backend, updated_at, node, version}]", a.listEntries},
		{"GET /entries/{file}", false, "the override of a host (URL-encoded), 404 when none", a.getEntry},
		{"DELETE /entries/{file}", true, "remove the override of a host (URL-encoded), 404 when none", a.deleteEntry},
		{"GET /v1/members", false, "cluster members: name, gossip address, status, services; the node asked also its health check (state, probes in a row, last error)", a.members},
		{"GET /v1/lookup", false, "?key=K&service=S&n=N: the backend for K, and up to N candidates (N 1 to 8, default 1); 404 for an unknown service or no live instance", a.lookup},
		{"GET /v1/route", false, "for nginx auth_request: key in header X-Ringman-Key (service in X-Ringman-Service, optional; ?n=N): 200 with X-Ringman-Backend: host:port, X-Ringman-Source and X-Ringman-Candidates, or 403 when there is no route", a.route},
		{"GET /v1/rings", false, "per service: instances and their share of partitions", a.rings},
		{"POST /v1/join", true, `{"addrs":["host:port",...]}: join a cluster through these nodes`, a.join},
		{"POST /v1/leave", true, "leave the cluster gracefully and stop this node", a.leave},
		{"POST /v1/drain", true, `{"drain":true|false}: take this node's instances out of (or back into) every ring`, a.drain},
		{"POST /v1/weight", true, `{"service":"web","instance":"10.0.0.5:8080","weight":2}: change the weight of one of this node's instances (0 to 100; 0 keeps it listed with no keys), gossiped to every node; until the node restarts`, a.weight},
		{"GET /v1/keys", true, "gossip keys of every node: each key (base64) and on how many nodes it is installed and primary", a.keys(discovery.KeyList)},
		{"POST /v1/keys/install", true, `{"key":"<base64>"}: install a gossip key on every node; 502 lists the nodes that did not`, a.keys(discovery.KeyInstall)},
		{"POST /v1/keys/use", true, `{"key":"<base64>"}: make an installed key the one that encrypts, on every node (409 unless every node has it)`, a.keys(discovery.KeyUse)},
		{"POST /v1/keys/remove", true, `{"key":"<base64>"}: remove a gossip key from every node (409 while it is a primary key)`, a.keys(discovery.KeyRemove)},
		{"GET /healthz", false, "200 while the process serves", a.healthz},
		{"GET /readyz", false, "200 once joined and serving, else 503", a.readyz},
	}
}

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
	if p := r.URL.EscapedPath(); r.Method != http.MethodConnect && !isCleanPath(p) {
		// The mux would answer 307 to the clean path, and clients re-send
		// the request there (a DELETE of /entries/../x.json would remove
		// x): refuse such paths instead.
		writeError(w, http.StatusBadRequest, "%s %s: path is not clean (it has '.', '..' or empty segments)", r.Method, p)
		return
	}
	if _, pattern := a.mux.Handler(r); pattern == "" {
		// The mux answers unknown routes and wrong methods in plain text; keep
		// the API's JSON shape, and its Allow header.
		rec := &statusRecorder{header: http.Header{}}
		a.mux.ServeHTTP(rec, r)
		if allow := rec.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		status := rec.status
		if status == 0 || status == http.StatusOK {
			status = http.StatusNotFound
		}
		writeError(w, status, "%s %s: %s", r.Method, r.URL.EscapedPath(), strings.ToLower(http.StatusText(status)))
		return
	}
	a.mux.ServeHTTP(w, r)
}

// isCleanPath reports whether p is in the canonical form ServeMux wants
// (no "." or ".." segments, no "//"; a trailing slash is kept).
func isCleanPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c == p
}

type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(code int)        { s.status = code }

func (a *api) authorized(next http.HandlerFunc) http.HandlerFunc {
	if a.Token == "" {
		return next
	}
	// Digests, so that the time taken says nothing about the token, not
	// even its length (ConstantTimeCompare returns at once on a length
	// mismatch).
	want := sha256.Sum256([]byte("Bearer " + a.Token))
	return func(w http.ResponseWriter, r *http.Request) {
		got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ringman"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong API token (send Authorization: Bearer <token>)")
			return
		}
		next(w, r)
	}
}

func (a *api) index(w http.ResponseWriter, r *http.Request) {
	if r.URL.EscapedPath() != "/" {
		// The mux also routes "/%2f" ("//" decoded) here.
		writeError(w, http.StatusNotFound, "%s %s: not found", r.Method, r.URL.EscapedPath())
		return
	}
	var b strings.Builder
	b.WriteString("ringman HTTP API. Every answer is JSON; errors are {\"error\":\"...\"}.\n\n")
	type line struct{ pattern, doc string }
	var lines []line
	width := 0
	for _, rt := range a.routes() {
		pattern := strings.TrimSuffix(rt.pattern, "{$}")
		// The mux cannot match a suffix after a wildcard; show the route
		// as clients call it.
		pattern = strings.Replace(pattern, "{file}", "{host}.json", 1)
		doc := rt.doc
		if rt.changes && a.Token != "" {
			doc += " [token]"
		}
		lines = append(lines, line{pattern, doc})
		width = max(width, len(pattern))
	}
	lines = append(lines, line{"GET /metrics", "Prometheus metrics"})
	for _, l := range lines {
		fmt.Fprintf(&b, "%-*s  %s\n", width, l.pattern, l.doc)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(b.String()))
}

func (a *api) members(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.memberList())
}

func (a *api) lookup(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	l, status, err := a.lookupKey(q.Get("key"), q.Get("service"), q.Get("n"))
	if err != nil {
		writeError(w, status, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

func (a *api) rings(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.ringList())
}

func (a *api) join(w http.ResponseWriter, r *http.Request) {
	var req JoinRequest
	if !decode(w, r, &req, false) {
		return
	}
	if len(req.Addrs) == 0 {
		writeError(w, http.StatusBadRequest, `addrs is required: {"addrs":["host:port"]}`)
		return
	}
	n, err := a.Cluster.Join(req.Addrs)
	if errors.Is(err, discovery.ErrJoinSelf) {
		writeError(w, http.StatusBadRequest, "join refused: %v", err)
		return
	}
	if n == 0 {
		msg := "no node answered"
		if err != nil {
			msg = err.Error()
		}
		writeError(w, http.StatusBadGateway, "join failed: %s", msg)
		return
	}
	writeJSON(w, http.StatusOK, JoinResult{Joined: n})
}

func (a *api) leave(w http.ResponseWriter, r *http.Request) {
	if a.Leave == nil {
		writeError(w, http.StatusNotImplemented, "this node cannot leave through the API")
		return
	}
	writeJSON(w, http.StatusAccepted, Status{Status: "leaving"})
	// Answer first: leaving stops this server.
	go a.Leave()
}

func (a *api) drain(w http.ResponseWriter, r *http.Request) {
	var req DrainRequest
	if !decode(w, r, &req, true) {
		return
	}
	on := req.Drain == nil || *req.Drain
	if err := a.Cluster.SetDraining(on); err != nil {
		writeError(w, http.StatusInternalServerError, "drain: %v", err)
		return
	}
	writeJSON(w, http.StatusOK, DrainResult{Draining: a.Cluster.Draining()})
}

func (a *api) weight(w http.ResponseWriter, r *http.Request) {
	var req WeightRequest
	if !decode(w, r, &req, false) {
		return
	}
	if req.Weight == nil || req.Instance == "" {
		writeError(w, http.StatusBadRequest, `instance and weight are required: {"service":"web","instance":"10.0.0.5:8080","weight":2}`)
		return
	}
	service := req.Service
	if service == "" {
		service = a.Router.DefaultService()
	}
	in, err := a.Cluster.SetWeight(service, req.Instance, *req.Weight)
	switch {
	case errors.Is(err, discovery.ErrNotLocal):
		writeError(w, http.StatusNotFound, "%v", err)
		return
	case errors.Is(err, discovery.ErrBadWeight):
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, "weight: %v", err)
		return
	}
	writeJSON(w, http.StatusOK, WeightResult{Service: service, Instance: in.String(), Weight: in.Weight})
}

func (a *api) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Status{Status: "ok"})
}

func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	if a.Ready != nil {
		if ok, why := a.Ready(); !ok {
			writeJSON(w, http.StatusServiceUnavailable, Status{Status: "not ready", Reason: why})
			return
		}
	}
	writeJSON(w, http.StatusOK, Status{Status: "ready"})
}

// decode reads a JSON body into v (exactly one JSON value in UTF-8, see
// readJSON); unknown fields are errors. An empty body is allowed only when
// emptyOK.
func decode(w http.ResponseWriter, r *http.Request, v any, emptyOK bool) bool {
	body, ok := readJSON(w, r, emptyOK)
	if !ok || body == nil {
		return ok
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: %v", err)
		return false
	}
	return true
}

// writeJSON answers status and v. It encodes v before writing the status:
// a value that cannot be encoded is a 500 with a JSON error, not the
// intended status with an empty body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		buf.Reset()
		status = http.StatusInternalServerError
		enc.Encode(Error{Error: "cannot encode the answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, Error{Error: fmt.Sprintf(format, args...)})
}
