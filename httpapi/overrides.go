package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"ringman/hostmap"
)

// The /entries routes keep the original set_backend project's API, which
// was a Rails-style resource: POST /entries.json creates (201 Created with
// a Location) or, for a host that has an override already, replaces it
// (200); GET /entries.json lists; GET and DELETE /entries/<host>.json read
// and remove one. ServeMux cannot match "{host}.json", so the routes match
// /entries/{file} and strip the ".json" here.

// overrides reports whether the node has an override table, answering 503
// when it has none.
func (a *api) overrides(w http.ResponseWriter) bool {
	if a.Overrides == nil {
		writeError(w, http.StatusServiceUnavailable, "host overrides are not available on this node (it runs without an override table)")
		return false
	}
	return true
}

// setEntries is POST /entries.json: one {"host","backend"} object, or an
// array of them imported in one commit.
func (a *api) setEntries(w http.ResponseWriter, r *http.Request) {
	if !a.overrides(w) {
		return
	}
	var raw json.RawMessage
	if !decode(w, r, &raw, false) {
		return
	}
	switch body := bytes.TrimLeft(raw, " \t\r\n"); body[0] {
	case '{':
		a.setEntry(w, body)
	case '[':
		a.importEntries(w, body)
	default:
		writeError(w, http.StatusBadRequest, `invalid JSON body: want {"host":"some.host.com","backend":"10.0.0.5:3000"} or an array of such objects`)
	}
}

func (a *api) setEntry(w http.ResponseWriter, body []byte) {
	var p hostmap.Pair
	if err := decodeStrict(body, &p); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: %v", err)
		return
	}
	// Only to choose between 201 and 200: a concurrent write to the same
	// host may make the status stale, never the stored entry.
	existed := false
	if h, err := hostmap.NormalizeHost(p.Host); err == nil {
		_, existed = a.Overrides.Get(h)
	}
	e, err := a.Overrides.Set(p.Host, p.Backend)
	if err != nil {
		a.writeSetError(w, err)
		return
	}
	status := http.StatusOK
	if !existed {
		status = http.StatusCreated
		w.Header().Set("Location", entryPath(e.Host))
	}
	writeJSON(w, status, overrideOf(e))
}

func (a *api) importEntries(w http.ResponseWriter, body []byte) {
	var elems []json.RawMessage
	if err := json.Unmarshal(body, &elems); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: %v", err)
		return
	}
	if len(elems) == 0 {
		writeError(w, http.StatusBadRequest, "the list of entries is empty: nothing to import")
		return
	}
	pairs := make([]hostmap.Pair, len(elems))
	for i, el := range elems {
		if err := decodeStrict(el, &pairs[i]); err != nil {
			writeError(w, http.StatusBadRequest, "entry %d: invalid JSON: %v", i, err)
			return
		}
	}
	entries, err := a.Overrides.SetMany(pairs)
	if err != nil {
		a.writeSetError(w, err)
		return
	}
	out := make([]Override, len(entries))
	for i, e := range entries {
		out[i] = overrideOf(e)
	}
	writeJSON(w, http.StatusOK, out)
}

// writeSetError answers a failed Set or SetMany: 400 for what the client
// sent (the message names the field, and the index in a bulk import), 500
// for a failed write.
func (a *api) writeSetError(w http.ResponseWriter, err error) {
	var fe *hostmap.FieldError
	if errors.As(err, &fe) {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	a.Logger.Error("storing overrides failed", "err", err)
	writeError(w, http.StatusInternalServerError, "storing the override failed: %v", err)
}

// listEntries is GET /entries.json.
func (a *api) listEntries(w http.ResponseWriter, r *http.Request) {
	if !a.overrides(w) {
		return
	}
	entries := a.Overrides.List()
	out := make([]Override, len(entries))
	for i, e := range entries {
		out[i] = overrideOf(e)
	}
	writeJSON(w, http.StatusOK, out)
}

// getEntry is GET /entries/{host}.json.
func (a *api) getEntry(w http.ResponseWriter, r *http.Request) {
	if !a.overrides(w) {
		return
	}
	host, ok := pathHost(w, r)
	if !ok {
		return
	}
	e, found := a.Overrides.Get(host)
	if !found {
		writeError(w, http.StatusNotFound, "no override for host %q", host)
		return
	}
	writeJSON(w, http.StatusOK, overrideOf(e))
}

// deleteEntry is DELETE /entries/{host}.json; it answers with the entry it
// removed.
func (a *api) deleteEntry(w http.ResponseWriter, r *http.Request) {
	if !a.overrides(w) {
		return
	}
	host, ok := pathHost(w, r)
	if !ok {
		return
	}
	prev, found := a.Overrides.Get(host)
	tomb, err := a.Overrides.Delete(host)
	var fe *hostmap.FieldError
	switch {
	case errors.Is(err, hostmap.ErrNotFound):
		writeError(w, http.StatusNotFound, "no override for host %q", host)
		return
	case errors.As(err, &fe):
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	case err != nil:
		a.Logger.Error("deleting an override failed", "host", host, "err", err)
		writeError(w, http.StatusInternalServerError, "deleting the override failed: %v", err)
		return
	}
	if !found { // removed between Get and Delete by a concurrent write
		prev = tomb
	}
	writeJSON(w, http.StatusOK, overrideOf(prev))
}

// pathHost returns the normalised host of /entries/{host}.json (the mux has
// URL-decoded it), answering 404 when the path does not end in ".json" and
// 400 when the host is not a host name (which covers "../.." and the like).
func pathHost(w http.ResponseWriter, r *http.Request) (string, bool) {
	name, ok := strings.CutSuffix(r.PathValue("file"), ".json")
	if !ok {
		writeError(w, http.StatusNotFound, "%s %s: not found (the route is /entries/<url-encoded host>.json)", r.Method, r.URL.Path)
		return "", false
	}
	host, err := hostmap.NormalizeHost(name)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return "", false
	}
	return host, true
}

// decodeStrict decodes one JSON value, refusing unknown fields.
func decodeStrict(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func entryPath(host string) string {
	return "/entries/" + url.PathEscape(host) + ".json"
}

func overrideOf(e hostmap.Entry) Override {
	return Override{
		Host:      e.Host,
		Backend:   e.Backend,
		UpdatedAt: e.Version.Time(),
		Node:      e.Version.Node,
		Version:   strconv.FormatUint(e.Version.Clock, 10),
	}
}
