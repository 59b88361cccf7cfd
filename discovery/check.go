package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// healthCheck polls the local instance over HTTP.
type healthCheck struct {
	url      string
	interval time.Duration
	client   *http.Client
}

func newHealthCheck(c Check) *healthCheck {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // the local instance, never through a proxy from the environment
	tr.MaxIdleConns = 1
	return &healthCheck{
		url:      c.URL,
		interval: c.Interval,
		client:   &http.Client{Timeout: c.Timeout, Transport: tr},
	}
}

// run checks once: nil when the instance answers 2xx within the timeout.
func (h *healthCheck) run(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	// Drain a little so the connection can be reused, not a whole page.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s", h.url, resp.Status)
	}
	return nil
}

func (h *healthCheck) close() { h.client.CloseIdleConnections() }

// checkLoop drains the node while its check fails and undrains it when the
// check passes again, logging each transition once.
func (n *Node) checkLoop(h *healthCheck) {
	defer n.wg.Done()
	defer h.close()
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
		}
		err := h.run(n.ctx)
		if n.isClosed() {
			return
		}
		failing := err != nil
		n.metaMu.Lock()
		was := n.checkDrain
		n.metaMu.Unlock()
		if failing == was {
			continue
		}
		if failing {
			n.log.Warn("health check failing; draining this node", "url", h.url, "err", err)
		} else {
			n.log.Info("health check passing again; undraining this node", "url", h.url)
		}
		if err := n.setDrain(func() { n.checkDrain = failing }); err != nil && !errors.Is(err, ErrShutdown) && !errors.Is(err, errLeft) {
			n.log.Warn("cannot change drain state after health check", "err", err)
		}
	}
}
