package httpapi

import "time"

// Wire types: what the API sends and the CLI parses. They are separate from
// the internal types so that those can change without breaking scripts.

// Override is one host override as /entries sends it. Host and backend
// are the original set_backend fields; the rest says which write won.
type Override struct {
	Host    string `json:"host"`
	Backend string `json:"backend"`
	// UpdatedAt is when the winning write was made (its hybrid logical
	// clock, to the millisecond).
	UpdatedAt time.Time `json:"updated_at"`
	// Node is the node that made the winning write.
	Node string `json:"node"`
	// Version is the write's hybrid logical clock in decimal, a string
	// because it does not fit a JSON (float64) number exactly.
	Version string `json:"version"`
}

// Member is one node of the cluster as the answering node sees it.
type Member struct {
	Name     string              `json:"name"`
	Addr     string              `json:"addr"`
	Status   string              `json:"status"`
	Services map[string][]string `json:"services"`
	Version  string              `json:"version,omitempty"`
	// Check is the node's health check: only on the member that answered
	// (each node probes its own instance), absent without --check.
	Check *MemberCheck `json:"check,omitempty"`
	// CheckFailing: the member's health check fails and drains it, as it
	// gossips (every member's; Check has the details of the one asked).
	CheckFailing bool `json:"check_failing,omitempty"`
}

// MemberCheck is a node's health check of its local instance.
type MemberCheck struct {
	URL      string    `json:"url"`
	State    string    `json:"state"`    // "passing", or "failing": the node drains
	Passes   int       `json:"passes"`   // probes in a row that passed
	Failures int       `json:"failures"` // probes in a row that failed
	Since    time.Time `json:"since"`    // when the state last changed
	Checked  time.Time `json:"checked"`  // when the last probe ended
	// LastError is the last failed probe's error (an old one while the
	// check passes), at LastErrorAt.
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
}

// Lookup is the answer to GET /v1/lookup.
type Lookup struct {
	Key        string   `json:"key"`
	Service    string   `json:"service"`
	Backend    string   `json:"backend"`
	Source     string   `json:"source"` // "ring" or "override"
	Candidates []string `json:"candidates"`
}

// Ring describes one service's ring for GET /v1/rings.
type Ring struct {
	Partitions int            `json:"partitions"`
	Instances  []RingInstance `json:"instances"`
}

// RingInstance is one instance and its share of the ring's partitions.
type RingInstance struct {
	Instance   string  `json:"instance"`
	ID         string  `json:"id"`     // what placement hashes: the instance's id=, else its address
	Weight     float64 `json:"weight"` // its weight= (1 by default)
	Partitions int     `json:"partitions"`
	Share      float64 `json:"share"`
}

// JoinRequest is the body of POST /v1/join.
type JoinRequest struct {
	Addrs []string `json:"addrs"`
}

// JoinResult is the answer to POST /v1/join.
type JoinResult struct {
	Joined int `json:"joined"`
}

// WeightRequest is the body of POST /v1/weight.
type WeightRequest struct {
	Service  string `json:"service"` // default: the default service
	Instance string `json:"instance"`
	Weight   *int   `json:"weight"`
}

// WeightResult is the answer to POST /v1/weight: the instance as the node
// now advertises it.
type WeightResult struct {
	Service  string `json:"service"`
	Instance string `json:"instance"`
	Weight   int    `json:"weight"`
}

// DrainRequest is the (optional) body of POST /v1/drain.
type DrainRequest struct {
	Drain *bool `json:"drain"` // default true
}

// DrainResult is the answer to POST /v1/drain.
type DrainResult struct {
	Draining bool `json:"draining"`
}

// Status is the answer of /healthz, /readyz and /v1/leave.
type Status struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// Error is every error body.
type Error struct {
	Error string `json:"error"`
}

// Headers of GET /v1/route, the endpoint of nginx's auth_request.
const (
	// HeaderKey carries the lookup key (required), e.g. $host$uri.
	HeaderKey = "X-Ringman-Key"
	// HeaderService names the service; absent means the default service.
	HeaderService = "X-Ringman-Service"
	// HeaderBackend is the answer: the backend's host:port.
	HeaderBackend = "X-Ringman-Backend"
	// HeaderSource says where the answer came from: "ring" or "override".
	HeaderSource = "X-Ringman-Source"
	// HeaderCandidates lists up to n candidates (?n=), owner first, comma-separated.
	HeaderCandidates = "X-Ringman-Candidates"
)
