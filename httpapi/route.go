package httpapi

import (
	"net/http"
	"strings"

	"ringman/router"
)

// route answers nginx's auth_request subrequests (nginx/auth_request.conf),
// for nginx builds without Lua: the key and service come in headers (nginx
// can set headers on a subrequest, not rewrite its query safely), the answer
// goes back in headers (auth_request_set reads them), and "no route" is 403
// because auth_request passes only 2xx, 401 and 403 and turns every other
// status into 500. The body is the same JSON as /v1/lookup, for humans.
func (a *api) route(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get(HeaderKey)
	if key == "" {
		a.Lookups.errors.Add(1)
		writeError(w, http.StatusBadRequest, "header %s is required (the lookup key, e.g. $host$uri)", HeaderKey)
		return
	}
	n, err := parseN(r.URL.Query().Get("n"))
	if err != nil {
		a.Lookups.errors.Add(1)
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	service := r.Header.Get(HeaderService)
	if service == "" {
		service = a.Router.DefaultService()
	}
	if !a.Router.Known(service) {
		// 403 like any other no-route answer: auth_request turns every
		// status but 2xx, 401 and 403 into 500.
		a.Lookups.errors.Add(1)
		writeError(w, http.StatusForbidden, "%v", unknownService(service))
		return
	}
	cands, src := a.Router.Candidates(service, []byte(key), n)
	a.Lookups.lookups[src].Add(1)
	if src == router.Miss {
		writeError(w, http.StatusForbidden, "no backend for key %q: service %q has no live instance", key, service)
		return
	}
	h := w.Header()
	h.Set(HeaderBackend, cands[0])
	h.Set(HeaderSource, src.String())
	h.Set(HeaderCandidates, strings.Join(cands, ","))
	writeJSON(w, http.StatusOK, Lookup{Key: key, Service: service, Backend: cands[0], Source: src.String(), Candidates: cands})
}
