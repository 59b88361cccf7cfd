package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

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
	body, ok := readJSON(w, r, false)
	if !ok {
		return
	}
	switch body[0] {
	case '{':
		a.setEntry(w, body)
	case '[':
		a.importEntries(w, body)
	default:
		writeError(w, http.StatusBadRequest, `invalid JSON body: want {"host":"some.host.com","backend":"10.0.0.5:3000"} or an array of such objects`)
	}
}

func (a *api) setEntry(w http.ResponseWriter, body []byte) {
	p, err := decodePair(body)
	if err != nil {
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
		p, err := decodePair(el)
		if err != nil {
			writeError(w, http.StatusBadRequest, "entry %d: invalid JSON: %v", i, err)
			return
		}
		pairs[i] = p
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
	writeJSON(w, http.StatusOK, a.overrideList())
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
		// The escaped path: the decoded one may hold a line break.
		writeError(w, http.StatusNotFound, "%s %s: not found (the route is /entries/<url-encoded host>.json)", r.Method, r.URL.EscapedPath())
		return "", false
	}
	host, err := hostmap.NormalizeHost(name)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return "", false
	}
	return host, true
}

// readJSON reads a body that must be exactly one JSON value in UTF-8
// (RFC 8259) and returns it without the whitespace around it; an empty
// body is nil, and an error unless emptyOK. It answers 413 past MaxBody,
// 408 when the body does not arrive within the server's read timeout, and
// 400 for anything else. encoding/json alone would replace invalid UTF-8
// with U+FFFD, and Decoder.More lets a stray "}" or "]" after the value
// pass.
func readJSON(w http.ResponseWriter, r *http.Request, emptyOK bool) ([]byte, bool) {
	raw, err := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, "request body is over %d bytes", MaxBody)
		return nil, false
	case errors.As(err, &ne) && ne.Timeout():
		writeError(w, http.StatusRequestTimeout, "the request body did not arrive within the server's read timeout")
		return nil, false
	case err != nil:
		writeError(w, http.StatusBadRequest, "reading the request body failed: %v", err)
		return nil, false
	}
	body := bytes.Trim(raw, " \t\r\n")
	if len(body) == 0 && emptyOK {
		return nil, true
	}
	if len(body) == 0 {
		writeError(w, http.StatusBadRequest, "request body is empty; expected JSON")
		return nil, false
	}
	if !utf8.Valid(body) {
		writeError(w, http.StatusBadRequest, "invalid JSON body: it is not valid UTF-8")
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var value json.RawMessage
	if err := dec.Decode(&value); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: %v", err)
		return nil, false
	}
	if dec.InputOffset() != int64(len(body)) {
		writeError(w, http.StatusBadRequest, "invalid JSON body: more than one value, or data after the value")
		return nil, false
	}
	return body, true
}

// decodePair decodes one {"host","backend"} object. Names must be exactly
// "host" and "backend", each at most once: encoding/json would match them
// in any case and keep the last of repeated ones, so that
// {"host":"a.com","HOST":"b.com"} would silently set b.com.
func decodePair(raw []byte) (hostmap.Pair, error) {
	var p hostmap.Pair
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return p, errors.New(`want an object {"host":"some.host.com","backend":"10.0.0.5:3000"}`)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return p, err
		}
		name, _ := tok.(string)
		switch {
		case name != "host" && name != "backend":
			return p, fmt.Errorf(`unknown field %q (the fields are "host" and "backend")`, name)
		case seen[name]:
			return p, fmt.Errorf("field %q appears more than once", name)
		}
		seen[name] = true
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return p, err
		}
	}
	strict := json.NewDecoder(bytes.NewReader(raw))
	strict.DisallowUnknownFields()
	err := strict.Decode(&p)
	return p, err
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
