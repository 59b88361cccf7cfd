package httpapi

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"ringman/discovery"
)

// Keyring is the part of a discovery.Node that the /v1/keys routes use:
// it changes the gossip keyring of every member and reports per node.
type Keyring interface {
	Keys(ctx context.Context, op discovery.KeyOp, key []byte) (discovery.KeyResult, error)
}

// KeyRequest is the body of POST /v1/keys/install, /use and /remove.
type KeyRequest struct {
	Key string `json:"key"` // base64, as `ringman keygen` prints it
}

// KeyringResult is the answer of the /v1/keys routes: what every node did.
type KeyringResult struct {
	Op string `json:"op"` // list, install, use or remove
	// Nodes is how many nodes the answering node knows: the ones it asked,
	// itself included, and the failed ones (down: they missed the change).
	Nodes    int `json:"nodes"`
	Answered int `json:"answered"`
	// Keys are the keys of the nodes that answered, each with on how many
	// of them it is installed and primary (the key that encrypts).
	Keys   []KeyStatus  `json:"keys"`
	Failed []KeyFailure `json:"failed"`
	// Error sums up the failures (with status 502).
	Error string `json:"error,omitempty"`
}

// KeyStatus is one gossip key and where it is installed and primary.
type KeyStatus struct {
	Key       string `json:"key"` // base64
	Installed int    `json:"installed"`
	Primary   int    `json:"primary"`
}

// KeyFailure is a node that did not do the operation, and why.
type KeyFailure struct {
	Node  string `json:"node"`
	Addr  string `json:"addr"`
	Error string `json:"error"`
}

// keys serves GET /v1/keys (op list) and POST /v1/keys/{install,use,remove}.
// Answers: 200 when every node did it; 502 with the result when some did
// not (unreachable, no answer, their own error, or down); 400 for a
// malformed request, 409 when the safety rules refuse it or gossip is not
// encrypted (both change nothing).
func (a *api) keys(op discovery.KeyOp) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.Keyring == nil {
			writeError(w, http.StatusNotImplemented, "this node cannot manage gossip keys through the API")
			return
		}
		var key []byte
		if op != discovery.KeyList {
			var req KeyRequest
			if !decode(w, r, &req, false) {
				return
			}
			if req.Key == "" {
				writeError(w, http.StatusBadRequest, `key is required: {"key":"<base64 key from 'ringman keygen'>"}`)
				return
			}
			k, err := base64.StdEncoding.DecodeString(req.Key)
			if err != nil {
				writeError(w, http.StatusBadRequest, "key is not base64 (as 'ringman keygen' prints it): %v", err)
				return
			}
			key = k
		}
		res, err := a.Keyring.Keys(r.Context(), op, key)
		var refused *discovery.KeyRefusedError
		switch {
		case errors.Is(err, discovery.ErrInvalidKey):
			writeError(w, http.StatusBadRequest, "%v", err)
			return
		case errors.Is(err, discovery.ErrNotEncrypted):
			writeError(w, http.StatusConflict, "%v; encryption is turned on at start: restart every node with --encrypt KEY", err)
			return
		case errors.As(err, &refused):
			writeError(w, http.StatusConflict, "%v", err)
			return
		case errors.Is(err, discovery.ErrShutdown):
			writeError(w, http.StatusServiceUnavailable, "%v", err)
			return
		case err != nil:
			writeError(w, http.StatusInternalServerError, "keys %s: %v", op, err)
			return
		}
		out := keyringResult(res)
		if len(out.Failed) > 0 {
			var names []string
			for _, f := range out.Failed {
				names = append(names, f.Node)
			}
			out.Error = fmt.Sprintf("keys %s: %d of %d nodes did not answer or failed (%s)", op, len(out.Failed), out.Nodes, strings.Join(names, ", "))
			writeJSON(w, http.StatusBadGateway, out)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}

func keyringResult(res discovery.KeyResult) KeyringResult {
	out := KeyringResult{Op: string(res.Op), Nodes: len(res.Answers), Answered: res.Answered(),
		Keys: []KeyStatus{}, Failed: []KeyFailure{}}
	for _, k := range res.Keys() {
		out.Keys = append(out.Keys, KeyStatus{Key: base64.StdEncoding.EncodeToString(k.Key), Installed: k.Installed, Primary: k.Primary})
	}
	for _, f := range res.Failed() {
		out.Failed = append(out.Failed, KeyFailure{Node: f.Node, Addr: f.Addr, Error: f.Err})
	}
	return out
}
