// Package metrics turns what ringman's packages count into Prometheus
// metrics, for GET /metrics.
//
// It exists so that the arrows point one way: redisapi, httpapi, hostmap
// and store keep plain counters and hooks (atomics, Stats methods, funcs
// taking a time.Duration), router and discovery report what they have
// (rings, members, ring changes), and none of them knows Prometheus; this
// package reads them when scraped and is the one place that names the
// metrics and documents them. Nothing on the lookup path
// calls into Prometheus: lookups count into the packages' own lock-free
// counters, and Collect sums them at scrape time.
//
// Three things cannot be read at scrape time and are recorded as they
// happen, each off the lookup path: ring changes (what router.Update
// returned, through RingsChanged), bbolt commit times (ObserveCommit) and
// override replication delays (ObserveReplication).
package metrics

import (
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"ringman/discovery"
	"ringman/hostmap"
	"ringman/httpapi"
	"ringman/redisapi"
	"ringman/ring"
	"ringman/router"
)

// Sources are what Collect reads at scrape time. Nil fields are skipped
// (their metrics are not exported).
type Sources struct {
	// Version and Commit label ringman_build_info.
	Version, Commit string
	// RESP is the RESP server's counters (redisapi.Server.Stats).
	RESP func() redisapi.Stats
	// MaxClients is the RESP server's connection bound (0: none).
	MaxClients int
	// HTTP is the HTTP API's lookup counters.
	HTTP *httpapi.LookupCounters
	// Rings is the published rings by service (router.Router.Rings).
	Rings func() map[string]*ring.Ring
	// Services are always exported in ringman_ring_instances, 0 while
	// they have no ring (the default service and the RESP dbs' services).
	Services []string
	// Members is the gossip members as this node sees them.
	Members func() []discovery.Member
	// Overrides is the override table.
	Overrides *hostmap.Table
	// Live is the live instances per service as gossip gives them
	// (discovery.Node.Live): their configured weights are exported.
	Live func() map[string][]string
	// Check is the local health check's state (discovery.Node.CheckState);
	// false: the node has no check.
	Check func() (discovery.CheckState, bool)
}

// Metrics records what must be recorded as it happens, and collects the
// rest from Sources when scraped. Its methods are safe for concurrent use.
type Metrics struct {
	commits     prometheus.Histogram
	replication prometheus.Histogram
	rebuilds    *prometheus.CounterVec
	rebuildTook *prometheus.GaugeVec
	moved       *prometheus.GaugeVec
	tableWrites *prometheus.CounterVec
	tableEpoch  *prometheus.GaugeVec

	mu   sync.Mutex
	seen map[string]bool // services that had a ring change
}

// New returns the recorders. Register them, with the Sources to read, once
// everything they read exists.
func New() *Metrics {
	return &Metrics{
		commits: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ringman_store_commit_duration_seconds",
			Help:    "Duration of write transactions on the bbolt data file (override sets, deletes and merges, known peers, the gossip keyring), fsync included.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		replication: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ringman_override_replication_delay_seconds",
			Help: "For each override change from another node applied here: the time from its write on its origin node to its commit here. " +
				"The start is read from the origin's clock (the change's version), so clock skew between nodes adds to it or takes from it (a negative delay counts as 0). " +
				"A change that arrives by a full-state exchange after an outage counts with its whole age.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600},
		}),
		rebuilds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringman_ring_rebuilds_total",
			Help: "Ring changes published for the service: a rebuild after its live instances changed, or its removal when the last one went.",
		}, []string{"service"}),
		rebuildTook: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ringman_ring_rebuild_duration_seconds",
			Help: "How long the service's last ring rebuild took.",
		}, []string{"service"}),
		moved: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ringman_ring_keys_moved_ratio",
			Help: "Fraction of the service's keys whose owner changed in its last ring change (1 when the ring appeared or went away).",
		}, []string{"service"}),
		tableWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ringman_table_writes_total",
			Help: "Table files for nginx's native module (--table-dir) written, by result: ok, or error (each failed attempt; a failing write is retried and logged once per streak).",
		}, []string{"result"}),
		tableEpoch: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ringman_table_epoch_info",
			Help: "Always 1; epoch (16 hex digits, RING.TABLE's) is that of the service's table file last written (--table-dir).",
		}, []string{"service", "epoch"}),
		seen: map[string]bool{},
	}
}

// TableWritten records one attempt to write service's table file
// (tablefile.WriterConfig.OnWrite).
func (m *Metrics) TableWritten(service string, epoch uint64, err error) {
	ok, failed := m.tableWrites.WithLabelValues("ok"), m.tableWrites.WithLabelValues("error") // both exported from the first write
	if err != nil {
		failed.Inc()
		return
	}
	ok.Inc()
	// One series per service: the epoch is a label (a float would round a
	// 64-bit hash), so the previous one goes.
	m.tableEpoch.DeletePartialMatch(prometheus.Labels{"service": service})
	m.tableEpoch.WithLabelValues(service, fmt.Sprintf("%016x", epoch)).Set(1)
}

// ObserveCommit records the duration of one write transaction on the data
// file (hostmap.Options.OnCommit, store.Store.OnCommit).
func (m *Metrics) ObserveCommit(took time.Duration) { m.commits.Observe(took.Seconds()) }

// ObserveReplication records the delay of one override change from another
// node (hostmap.Options.OnReplicated).
func (m *Metrics) ObserveReplication(delay time.Duration) {
	m.replication.Observe(max(delay, 0).Seconds())
}

// RingsChanged records what router.Update reported; live is the set it was
// given (a service absent from it had its ring removed, not rebuilt).
func (m *Metrics) RingsChanged(changes []router.Change, live map[string][]string) {
	m.mu.Lock()
	for _, ch := range changes {
		m.seen[ch.Service] = true
	}
	m.mu.Unlock()
	for _, ch := range changes {
		m.rebuilds.WithLabelValues(ch.Service).Inc()
		m.moved.WithLabelValues(ch.Service).Set(ch.Moved)
		if _, rebuilt := live[ch.Service]; rebuilt {
			m.rebuildTook.WithLabelValues(ch.Service).Set(ch.Took.Seconds())
		}
	}
}

// Register registers the recorders and a collector of src with reg.
func (m *Metrics) Register(reg prometheus.Registerer, src Sources) error {
	for _, c := range []prometheus.Collector{m.commits, m.replication, m.rebuilds, m.rebuildTook, m.moved, m.tableWrites, m.tableEpoch, &collector{m: m, src: src}} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Descriptions of what collector reads at scrape time.
var (
	descBuildInfo = prometheus.NewDesc("ringman_build_info",
		"Always 1; the labels say which ringman runs.", []string{"version", "commit", "goversion"}, nil)
	descLookups = prometheus.NewDesc("ringman_lookups_total",
		"Keys looked up, by protocol (resp: GET, each key of MGET, RING.LOOKUP; http: /v1/lookup, /v1/route) and by where the answer came from (override, ring, or miss: no override and an empty ring).",
		[]string{"protocol", "source"}, nil)
	descLookupErrors = prometheus.NewDesc("ringman_lookup_errors_total",
		"Lookup requests answered with an error, by protocol: wrong arguments, NOAUTH, an unknown service (resp); a missing key, a bad n, an unknown service (http). A miss is not an error.",
		[]string{"protocol"}, nil)
	descRESPConns = prometheus.NewDesc("ringman_resp_connections",
		"RESP connections being served now.", nil, nil)
	descRESPMaxClients = prometheus.NewDesc("ringman_resp_max_clients",
		"The RESP connection bound (--max-clients); 0 when there is none.", nil, nil)
	descRESPAccepted = prometheus.NewDesc("ringman_resp_connections_accepted_total",
		"RESP connections accepted, those refused for max clients included.", nil, nil)
	descRESPLimits = prometheus.NewDesc("ringman_resp_limit_disconnects_total",
		"RESP connections the server closed because of a limit, by reason: request_too_big (over 64 KiB), too_many_arguments (over 1,024), protocol_error (malformed input), idle_timeout (--idle-timeout), max_clients (refused at once: --max-clients were being served). Connections closed by their clients are not counted.",
		[]string{"reason"}, nil)
	descRESPAuthFailures = prometheus.NewDesc("ringman_resp_auth_failures_total",
		"RESP AUTH (and HELLO ... AUTH) attempts refused for a wrong password or user (--requirepass). The log has a line about them at most every 10 s.",
		nil, nil)
	descInstances = prometheus.NewDesc("ringman_ring_instances",
		"Live instances on the service's published ring.", []string{"service"}, nil)
	descInstanceWeight = prometheus.NewDesc("ringman_ring_instance_weight",
		"Weight each instance is placed with on the service's published ring: its weight= (1 by default), scaled during a slow start (--slow-start); an instance of weight 0 is not on the ring.",
		[]string{"service", "instance"}, nil)
	descInstanceConfigured = prometheus.NewDesc("ringman_instance_weight",
		"Weight each live instance is configured with (its weight=, 1 by default; changed at run time by ringman weight), before a slow start scales it.",
		[]string{"service", "instance"}, nil)
	descInstancePartitions = prometheus.NewDesc("ringman_ring_instance_partitions",
		"Partitions each instance owns on the service's published ring (its share of the keys is this over the ring's partition count).",
		[]string{"service", "instance"}, nil)
	descMembers = prometheus.NewDesc("ringman_members",
		"Gossip members as this node sees them (itself included), by state; left and failed members stay listed for an hour.",
		[]string{"state"}, nil)
	descOverrides = prometheus.NewDesc("ringman_overrides",
		"Live host overrides (tombstones of deleted ones not included).", nil, nil)
	descRefused = prometheus.NewDesc("ringman_override_versions_refused_total",
		"Override changes from other nodes not applied because their version was more than --max-clock-offset ahead of this node's clock (a broken or skewed clock, or a hostile member). A change from a merely skewed node is applied by a later full-state exchange once this node's clock is within the bound.",
		nil, nil)
	descCheckPassing = prometheus.NewDesc("ringman_check_passing",
		"1 while the local instance's health check (--check) passes, 0 while it fails and the node drains; absent without --check. Turns to 0 after --check-fall failed probes in a row and back after --check-rise passed ones.",
		nil, nil)
	descCheckFailures = prometheus.NewDesc("ringman_check_failures_in_a_row",
		"Health-check probes in a row that failed (0 after a passing one); the node drains when it reaches --check-fall.",
		nil, nil)
	descPending = prometheus.NewDesc("ringman_override_pending_oldest_seconds",
		"Age of the oldest override change received from another node and not applied here yet (queued, being merged, or lost to a full queue or a failed commit until a later full-state exchange); 0 when there is none.",
		nil, nil)
)

// memberStates are exported in this order, each even when no member is in it.
var memberStates = []discovery.Status{discovery.StatusAlive, discovery.StatusDraining, discovery.StatusLeaving, discovery.StatusLeft, discovery.StatusFailed}

// collector reads Sources at scrape time.
type collector struct {
	m   *Metrics
	src Sources
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBuildInfo, descLookups, descLookupErrors, descRESPConns, descRESPMaxClients,
		descRESPAccepted, descRESPLimits, descRESPAuthFailures, descInstances, descInstanceWeight, descInstanceConfigured, descInstancePartitions, descMembers, descOverrides, descRefused, descPending, descCheckPassing, descCheckFailures} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descBuildInfo, 1, c.src.Version, c.src.Commit, runtime.Version())
	lookups := func(protocol string, bySource [router.NumSources]uint64, errors uint64) {
		for src, n := range bySource {
			counter(descLookups, n, protocol, router.Source(src).String())
		}
		counter(descLookupErrors, errors, protocol)
	}
	if c.src.RESP != nil {
		st := c.src.RESP()
		lookups("resp", st.Lookups, st.LookupErrors)
		gauge(descRESPConns, float64(st.Clients))
		gauge(descRESPMaxClients, float64(c.src.MaxClients))
		counter(descRESPAccepted, st.Accepted)
		counter(descRESPAuthFailures, st.AuthFailures)
		for _, r := range []struct {
			reason string
			n      uint64
		}{
			{"request_too_big", st.Closed.RequestTooBig},
			{"too_many_arguments", st.Closed.TooManyArgs},
			{"protocol_error", st.Closed.ProtocolError},
			{"idle_timeout", st.Closed.IdleTimeout},
			{"max_clients", st.Closed.MaxClients},
		} {
			counter(descRESPLimits, r.n, r.reason)
		}
	}
	if c.src.HTTP != nil {
		st := c.src.HTTP.Stats()
		lookups("http", st.Lookups, st.Errors)
	}
	if c.src.Rings != nil {
		for service, n := range c.instances() {
			gauge(descInstances, float64(n), service)
		}
		for service, rg := range c.src.Rings() {
			owned := rg.Owned()
			for _, in := range rg.Describe() {
				gauge(descInstanceWeight, in.Weight, service, in.Addr)
				gauge(descInstancePartitions, float64(owned[in.Addr]), service, in.Addr)
			}
		}
	}
	if c.src.Members != nil {
		count := map[discovery.Status]int{}
		for _, m := range c.src.Members() {
			count[m.Status]++
		}
		for _, s := range memberStates {
			gauge(descMembers, float64(count[s]), string(s))
		}
	}
	if c.src.Live != nil {
		for service, specs := range c.src.Live() {
			for _, spec := range specs {
				if in, err := discovery.ParseInstance(spec); err == nil {
					gauge(descInstanceConfigured, float64(in.Weight), service, in.Addr)
				}
			}
		}
	}
	if c.src.Check != nil {
		if st, ok := c.src.Check(); ok {
			passing := 0.0
			if st.Passing {
				passing = 1
			}
			gauge(descCheckPassing, passing)
			gauge(descCheckFailures, float64(st.Failures))
		}
	}
	if c.src.Overrides != nil {
		gauge(descOverrides, float64(c.src.Overrides.Len()))
		counter(descRefused, c.src.Overrides.RefusedVersions())
		age := 0.0
		if since := c.src.Overrides.PendingSince(); !since.IsZero() {
			age = max(time.Since(since).Seconds(), 0)
		}
		gauge(descPending, age)
	}
}

// instances counts the live instances per service: every published ring,
// and 0 for the services named in Sources and those that had a ring once.
func (c *collector) instances() map[string]int {
	out := map[string]int{}
	for _, s := range c.src.Services {
		out[s] = 0
	}
	c.m.mu.Lock()
	for s := range c.m.seen {
		out[s] = 0
	}
	c.m.mu.Unlock()
	for service, rg := range c.src.Rings() {
		out[service] = rg.Len()
	}
	return out
}
