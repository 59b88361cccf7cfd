package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// healthCheck polls the local instance over HTTP and keeps its verdict with
// hysteresis, as HAProxy does: Fall failed probes in a row fail the check,
// Rise passed probes in a row pass it again, so that one slow answer does
// not drain the node and one good one does not undrain it.
type healthCheck struct {
	cfg    Check
	client *http.Client

	mu    sync.Mutex
	state CheckState
}

// CheckState is the health check's state as the node reports it
// (Node.CheckState, and the local member of Members).
type CheckState struct {
	URL string
	// Passing is the verdict: false drains the node.
	Passing bool
	// Passes and Failures count the probes in a row that passed or failed;
	// one of them is 0.
	Passes, Failures int
	// Since is when the verdict last changed (or the first probe).
	Since time.Time
	// Checked is when the last probe ended.
	Checked time.Time
	// LastError is the last failed probe's error, and LastErrorAt when it
	// ended; empty when no probe has failed.
	LastError   string
	LastErrorAt time.Time
}

func newHealthCheck(c Check) *healthCheck {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // the local instance, never through a proxy from the environment
	tr.MaxIdleConns = 1
	return &healthCheck{
		cfg: c,
		client: &http.Client{
			Timeout:   c.Timeout,
			Transport: tr,
			// A redirect is an answer, judged by its status like any
			// other: following it would probe another URL, or loop.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		state: CheckState{URL: c.URL},
	}
}

// probe checks once: nil when the instance answers with a status in the
// accepted range within the timeout.
func (h *healthCheck) probe(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.cfg.URL, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "ringman-check")
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	// Drain a little so the connection can be reused, not a whole page.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < h.cfg.StatusMin || resp.StatusCode > h.cfg.StatusMax {
		return fmt.Errorf("GET %s: %s (want %d-%d)", h.cfg.URL, resp.Status, h.cfg.StatusMin, h.cfg.StatusMax)
	}
	return nil
}

// first records the probe made before the node joins: it sets the verdict
// by itself, so that a node whose instance is down starts drained and one
// whose instance is up starts in the rings.
func (h *healthCheck) first(err error, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.count(err, now)
	h.state.Passing, h.state.Since = err == nil, now
	return h.state.Passing
}

// record counts one probe and reports whether it changed the verdict.
func (h *healthCheck) record(err error, now time.Time) (passing, changed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.count(err, now)
	s := &h.state
	switch {
	case s.Passing && s.Failures >= h.cfg.Fall:
		s.Passing, s.Since, changed = false, now, true
	case !s.Passing && s.Passes >= h.cfg.Rise:
		s.Passing, s.Since, changed = true, now, true
	}
	return s.Passing, changed
}

func (h *healthCheck) count(err error, now time.Time) {
	s := &h.state
	s.Checked = now
	if err != nil {
		s.Failures, s.Passes = s.Failures+1, 0
		s.LastError, s.LastErrorAt = err.Error(), now
	} else {
		s.Passes, s.Failures = s.Passes+1, 0
	}
}

func (h *healthCheck) snapshot() CheckState {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state
}

func (h *healthCheck) close() { h.client.CloseIdleConnections() }

// checkLoop probes the local instance every interval, drains the node when
// the check fails and undrains it when it passes again, logging each change
// of verdict once.
func (n *Node) checkLoop(h *healthCheck) {
	defer n.wg.Done()
	defer h.close()
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
		}
		err := h.probe(n.ctx)
		if n.isClosed() {
			return
		}
		passing, changed := h.record(err, time.Now())
		if !changed {
			if err != nil && passing {
				n.log.Debug("health check probe failed", "url", h.cfg.URL, "err", err, "in_a_row", h.snapshot().Failures, "fall", h.cfg.Fall)
			}
			continue
		}
		if passing {
			n.log.Info("health check passing again; undraining this node", "url", h.cfg.URL, "rise", h.cfg.Rise)
		} else {
			n.log.Warn("health check failing; draining this node", "url", h.cfg.URL, "err", err, "fall", h.cfg.Fall)
		}
		if err := n.setDrain(func() { n.checkDrain = !passing }); err != nil && !errors.Is(err, ErrShutdown) && !errors.Is(err, errLeft) {
			n.log.Warn("cannot change drain state after health check", "err", err)
		}
	}
}

// CheckState returns the health check's state, and false when the node has
// no check (Config.Check.URL is empty).
func (n *Node) CheckState() (CheckState, bool) {
	if n.checker == nil {
		return CheckState{}, false
	}
	return n.checker.snapshot(), true
}
