package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client calls a node's API. The CLI uses it; it never touches a node's files.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// StatusError is an error answer from the API.
type StatusError struct {
	Status  int
	Message string
	Body    []byte // the answer as sent (some carry a result: see KeyOp)
}

func (e *StatusError) Error() string { return e.Message }

// IsNotFound reports whether err is the API's 404 (for lookups: no answer).
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Status == http.StatusNotFound
}

// NewClient returns a client for the API at addr ("host:port" or a URL).
func NewClient(addr, token string) (*Client, error) {
	if addr == "" {
		return nil, errors.New("API address is empty")
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("invalid API address %q: want host:port or http://host:port", addr)
	}
	return &Client{
		base:  strings.TrimSuffix(u.String(), "/"),
		token: token,
		http:  &http.Client{Timeout: 30 * time.Second},
	}, nil
}

// Members lists the cluster's members.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	var out []Member
	return out, c.do(ctx, http.MethodGet, "/v1/members", nil, &out)
}

// Lookup asks which backend serves key on service ("" = the default), with
// up to n candidates.
func (c *Client) Lookup(ctx context.Context, key, service string, n int) (Lookup, error) {
	q := url.Values{"key": {key}}
	if service != "" {
		q.Set("service", service)
	}
	if n > 0 {
		q.Set("n", strconv.Itoa(n))
	}
	var out Lookup
	return out, c.do(ctx, http.MethodGet, "/v1/lookup?"+q.Encode(), nil, &out)
}

// Rings describes every service's ring.
func (c *Client) Rings(ctx context.Context) (map[string]Ring, error) {
	var out map[string]Ring
	return out, c.do(ctx, http.MethodGet, "/v1/rings", nil, &out)
}

// Join asks the node to join a cluster through addrs.
func (c *Client) Join(ctx context.Context, addrs []string) (int, error) {
	var out JoinResult
	return out.Joined, c.do(ctx, http.MethodPost, "/v1/join", JoinRequest{Addrs: addrs}, &out)
}

// Leave asks the node to leave the cluster and stop.
func (c *Client) Leave(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/leave", nil, &Status{})
}

// SetWeight changes the weight of one of the node's instances.
func (c *Client) SetWeight(ctx context.Context, service, instance string, weight int) (WeightResult, error) {
	var out WeightResult
	return out, c.do(ctx, http.MethodPost, "/v1/weight", WeightRequest{Service: service, Instance: instance, Weight: &weight}, &out)
}

// Drain takes the node's instances out of every ring (on) or back in.
func (c *Client) Drain(ctx context.Context, on bool) (bool, error) {
	var out DrainResult
	return out.Draining, c.do(ctx, http.MethodPost, "/v1/drain", DrainRequest{Drain: &on}, &out)
}

// Hosts lists the node's host overrides, sorted by host.
func (c *Client) Hosts(ctx context.Context) ([]Override, error) {
	var out []Override
	return out, c.do(ctx, http.MethodGet, "/entries.json", nil, &out)
}

// Host returns the override of host (IsNotFound when it has none).
func (c *Client) Host(ctx context.Context, host string) (Override, error) {
	var out Override
	return out, c.do(ctx, http.MethodGet, entryPath(host), nil, &out)
}

// SetHost creates or replaces the override of host and returns it as stored
// (host normalised).
func (c *Client) SetHost(ctx context.Context, host, backend string) (Override, error) {
	var out Override
	in := struct {
		Host    string `json:"host"`
		Backend string `json:"backend"`
	}{host, backend}
	return out, c.do(ctx, http.MethodPost, "/entries.json", in, &out)
}

// DeleteHost removes the override of host and returns what it was
// (IsNotFound when there was none).
func (c *Client) DeleteHost(ctx context.Context, host string) (Override, error) {
	var out Override
	return out, c.do(ctx, http.MethodDelete, entryPath(host), nil, &out)
}

// Keys lists the gossip keys of every node. When some node did not answer
// (a *StatusError with status 502) the result of the others comes with it.
func (c *Client) Keys(ctx context.Context) (KeyringResult, error) {
	return c.keyring(ctx, http.MethodGet, "/v1/keys", nil)
}

// KeyOp runs op ("install", "use" or "remove") with key (base64) on every
// node. When some node did not do it (a *StatusError with status 502) the
// per-node result comes with the error.
func (c *Client) KeyOp(ctx context.Context, op, key string) (KeyringResult, error) {
	return c.keyring(ctx, http.MethodPost, "/v1/keys/"+url.PathEscape(op), KeyRequest{Key: key})
}

func (c *Client) keyring(ctx context.Context, method, path string, in any) (KeyringResult, error) {
	var out KeyringResult
	err := c.do(ctx, method, path, in, &out)
	var se *StatusError
	if errors.As(err, &se) && se.Status == http.StatusBadGateway {
		var partial KeyringResult
		if json.Unmarshal(se.Body, &partial) == nil && partial.Nodes > 0 {
			return partial, err
		}
	}
	return out, err
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach ringman at %s (is `ringman serve` running? set --addr or RINGMAN_ADDR): %w", c.base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer from %s: %w", c.base, err)
	}
	if resp.StatusCode >= 300 {
		var e Error
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s %s: %s", method, path, resp.Status)
		}
		return &StatusError{Status: resp.StatusCode, Message: e.Error, Body: raw}
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("unexpected answer from %s%s: %w", c.base, path, err)
	}
	return nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
