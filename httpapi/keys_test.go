package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"ringman/discovery"
	"ringman/hostmap"
	"ringman/ring"
	"ringman/router"
	"ringman/store"
)

// keysFixture is a real two-node encrypted cluster; the API of a (with the
// token "tok") manages the keyring of both.
type keysFixture struct {
	srv   *httptest.Server
	a, b  *discovery.Node
	table *hostmap.Table
	left  int
}

func randomKey(t *testing.T) (raw []byte, b64 string) {
	t.Helper()
	raw = make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	return raw, base64.StdEncoding.EncodeToString(raw)
}

func newKeysFixture(t *testing.T, key []byte) *keysFixture {
	t.Helper()
	f := &keysFixture{}
	rt, err := router.New(ring.DefaultSettings(), "web")
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if f.table, err = hostmap.Open(st.DB(), hostmap.Options{Node: "a"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.table.Close() })
	start := func(name string, seeds []string) *discovery.Node {
		n, err := discovery.Start(discovery.Config{
			Name: name, BindAddr: "127.0.0.1:0", Profile: "fast", Keys: [][]byte{key}, Seeds: seeds,
			Services:    map[string][]string{"web": {name + ".test:80"}},
			Fingerprint: ring.DefaultSettings().Fingerprint(),
			OnChange:    func(live map[string][]string) { rt.Update(live) },
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Shutdown() })
		return n
	}
	f.a = start("a", nil)
	f.b = start("b", []string{f.a.Addr()})
	waitFor(t, 10*time.Second, func() (bool, string) {
		return len(f.a.Live()["web"]) == 2, "a does not see b"
	})
	f.srv = httptest.NewServer(New(Config{Router: rt, Cluster: f.a, Overrides: f.table, Token: "tok",
		Keyring: f.a, Leave: func() { f.left++ }}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *keysFixture) do(t *testing.T, method, path, body, auth string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(raw)
}

func (f *keysFixture) keys(t *testing.T, method, path, body string) (int, KeyringResult, string) {
	t.Helper()
	code, raw := f.do(t, method, path, body, "Bearer tok")
	var out KeyringResult
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		t.Fatalf("%s %s: %d, not JSON: %q", method, path, code, raw)
	}
	return code, out, raw
}

func keyBody(b64 string) string { return `{"key":"` + b64 + `"}` }

// TestKeysAPI drives a rotation through the API and checks its answers.
func TestKeysAPI(t *testing.T) {
	k1, b1 := randomKey(t)
	_, b2 := randomKey(t)
	_, b3 := randomKey(t)
	f := newKeysFixture(t, k1)

	code, res, raw := f.keys(t, "GET", "/v1/keys", "")
	if code != 200 || res.Op != "list" || res.Nodes != 2 || res.Answered != 2 || len(res.Failed) != 0 ||
		len(res.Keys) != 1 || res.Keys[0] != (KeyStatus{Key: b1, Installed: 2, Primary: 2}) {
		t.Fatalf("GET /v1/keys: %d %s", code, raw)
	}

	// Malformed requests: 400 with one clear error, nothing changed.
	for _, tc := range []struct{ body, want string }{
		{``, "request body is empty"},
		{`{}`, "key is required"},
		{`{"key":"not base64!"}`, "key is not base64"},
		{`{"key":"c2hvcnQ="}`, "key is 5 bytes; want 16, 24 or 32"},
		{`{"key":"` + b2 + `","extra":1}`, "unknown field"},
		{`{"key":"` + b2 + `"}{}`, "more than one value"},
	} {
		for _, op := range []string{"install", "use", "remove"} {
			code, raw := f.do(t, "POST", "/v1/keys/"+op, tc.body, "Bearer tok")
			var e Error
			if code != 400 || json.Unmarshal([]byte(raw), &e) != nil || !strings.Contains(e.Error, tc.want) || strings.Contains(e.Error, "\n") {
				t.Errorf("POST /v1/keys/%s %s: %d %s; want 400 with %q", op, tc.body, code, raw, tc.want)
			}
		}
	}
	// Safety rules: 409, nothing changed.
	for _, tc := range []struct{ op, body, want string }{
		{"use", keyBody(b2), "is not installed on 2 of 2 answering nodes (a, b)"},
		{"remove", keyBody(b1), "is the primary key on 2 of 2 answering nodes"},
	} {
		code, raw := f.do(t, "POST", "/v1/keys/"+tc.op, tc.body, "Bearer tok")
		if code != 409 || !strings.Contains(raw, tc.want) {
			t.Errorf("%s: %d %s; want 409 with %q", tc.op, code, raw, tc.want)
		}
	}
	if _, res, raw := f.keys(t, "GET", "/v1/keys", ""); len(res.Keys) != 1 {
		t.Fatalf("refused requests changed the keyring: %s", raw)
	}

	// The rotation.
	for _, step := range []struct {
		op   string
		body string
		want []KeyStatus
	}{
		{"install", keyBody(b2), []KeyStatus{{b1, 2, 2}, {b2, 2, 0}}},
		{"use", keyBody(b2), []KeyStatus{{b2, 2, 2}, {b1, 2, 0}}},
		{"remove", keyBody(b1), []KeyStatus{{b2, 2, 2}}},
	} {
		code, res, raw := f.keys(t, "POST", "/v1/keys/"+step.op, step.body)
		if code != 200 || res.Op != step.op || res.Nodes != 2 || res.Answered != 2 || res.Error != "" ||
			len(res.Keys) != len(step.want) || res.Keys[0] != step.want[0] || res.Keys[len(res.Keys)-1] != step.want[len(step.want)-1] {
			t.Fatalf("%s: %d %s; want 200 with keys %v", step.op, code, raw, step.want)
		}
	}

	// b goes down: an install is done by a, and b is reported (502).
	f.b.Shutdown()
	waitFor(t, 10*time.Second, func() (bool, string) { return len(f.a.Live()["web"]) == 1, "a still sees b" })
	code, res, raw = f.keys(t, "POST", "/v1/keys/install", keyBody(b3))
	if code != 502 || res.Nodes != 2 || res.Answered != 1 || len(res.Failed) != 1 || res.Failed[0].Node != "b" ||
		!strings.Contains(res.Failed[0].Error, "missed this change") || !strings.Contains(res.Error, "1 of 2 nodes did not answer or failed (b)") {
		t.Errorf("install with b down: %d %s; want 502 naming b", code, raw)
	}

	// The client hands back the per-node result with the error.
	c, err := NewClient(f.srv.URL, "tok")
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Keys(context.Background())
	var se *StatusError
	if !errors.As(err, &se) || se.Status != 502 || out.Nodes != 2 || out.Answered != 1 || len(out.Keys) != 2 {
		t.Errorf("client Keys with b down: %+v, %v; want the partial result and a 502", out, err)
	}
}

func TestKeysAPIWithoutEncryptionOrKeyring(t *testing.T) {
	f := newFixture(t, "")
	_, b1 := randomKey(t)
	plain := httptest.NewServer(New(Config{Router: f.router, Cluster: f.node, Keyring: f.node}))
	defer plain.Close()
	none := httptest.NewServer(New(Config{Router: f.router, Cluster: f.node}))
	defer none.Close()
	for _, tc := range []struct {
		srv  *httptest.Server
		code int
		want string
	}{
		{plain, 409, "gossip is not encrypted on this node"},
		{none, 501, "cannot manage gossip keys"},
	} {
		resp, err := http.Post(tc.srv.URL+"/v1/keys/install", "application/json", strings.NewReader(keyBody(b1)))
		if err != nil {
			t.Fatal(err)
		}
		var e Error
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(e.Error, tc.want) {
			t.Errorf("install: %d %q; want %d with %q", resp.StatusCode, e.Error, tc.code, tc.want)
		}
	}
}

// TestEveryStateChangingRouteNeedsToken goes over the route list: every
// route that is not a GET (so changes state), and every route that shows
// secrets, must need the API token, and without it (or with a wrong one)
// answers 401 and changes nothing. A route added unprotected fails here.
func TestEveryStateChangingRouteNeedsToken(t *testing.T) {
	k1, _ := randomKey(t)
	_, b2 := randomKey(t)
	f := newKeysFixture(t, k1)
	secret := map[string]bool{"GET /v1/keys": true} // reads that show secrets
	// Bodies that would do something if the token were not checked.
	bodies := map[string]string{
		"POST /entries.json":    `{"host":"a.example.com","backend":"10.0.0.1:80"}`,
		"POST /v1/join":         `{"addrs":["127.0.0.1:1"]}`,
		"POST /v1/drain":        `{"drain":true}`,
		"POST /v1/keys/install": keyBody(b2),
		"POST /v1/keys/use":     keyBody(b2),
		"POST /v1/keys/remove":  keyBody(b2),
	}
	if _, err := f.table.Set("b.example.com", "10.0.0.2:80"); err != nil {
		t.Fatal(err)
	}
	protected := 0
	for _, rt := range (&api{}).routes() {
		method, pattern, _ := strings.Cut(rt.pattern, " ")
		needs := (method != http.MethodGet && method != http.MethodHead) || secret[rt.pattern]
		if needs && !rt.changes {
			t.Errorf("%s changes state or shows secrets but does not need --api-token", rt.pattern)
		}
		if !rt.changes {
			continue
		}
		protected++
		path := strings.NewReplacer("{$}", "", "{file}", "b.example.com.json").Replace(pattern)
		body := bodies[rt.pattern]
		if body == "" {
			body = "{}"
		}
		for _, auth := range []string{"", "Bearer wrong", "Bearer tok0", "Bearer to", "bearer tok", "tok", "Bearer  tok", "Basic dG9rOnRvaw=="} {
			code, raw := f.do(t, method, path, body, auth)
			var e Error
			if code != http.StatusUnauthorized || json.Unmarshal([]byte(raw), &e) != nil || !strings.Contains(e.Error, "API token") {
				t.Errorf("%s with Authorization %q: %d %s; want 401", rt.pattern, auth, code, raw)
			}
		}
	}
	if protected < 9 {
		t.Errorf("only %d routes need the token; the list must have lost some", protected)
	}
	// Nothing changed.
	if got := f.table.Len(); got != 1 {
		t.Errorf("%d overrides after unauthorised requests, want 1", got)
	}
	if _, ok := f.table.Get("b.example.com"); !ok {
		t.Error("an unauthorised DELETE removed the override")
	}
	if f.a.Draining() || f.left != 0 {
		t.Errorf("unauthorised requests drained (%v) or stopped (%d) the node", f.a.Draining(), f.left)
	}
	res, err := f.a.Keys(context.Background(), discovery.KeyList, nil)
	if err != nil || len(res.Keys()) != 1 {
		t.Errorf("unauthorised requests changed the keyring: %+v, %v", res.Keys(), err)
	}
	// And the right token passes.
	if code, raw := f.do(t, "GET", "/v1/keys", "", "Bearer tok"); code != 200 {
		t.Errorf("GET /v1/keys with the token: %d %s", code, raw)
	}
}
