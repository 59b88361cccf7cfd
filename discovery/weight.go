package discovery

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrNotLocal is returned by SetWeight for an instance this node does not
// advertise: only the node that fronts an instance changes its weight.
var ErrNotLocal = errors.New("not an instance of this node")

// ErrBadWeight is returned by SetWeight for a weight out of range.
var ErrBadWeight = errors.New("bad weight")

// SetWeight changes the weight of one of this node's instances and gossips
// it, as a drain is: every node rebuilds that service's ring, and only the
// keys the instance's share gains or loses move. Weight 0 keeps the instance
// listed with no keys. The change lasts until the node restarts, which takes
// --service's weight again. It returns the instance as now advertised.
func (n *Node) SetWeight(service, addr string, weight int) (Instance, error) {
	if weight < 0 || weight > MaxInstanceWeight {
		return Instance{}, fmt.Errorf("%w %d: want 0 to %d", ErrBadWeight, weight, MaxInstanceWeight)
	}
	n.opMu.Lock()
	defer n.opMu.Unlock()
	if n.closed {
		return Instance{}, ErrShutdown
	}
	if n.left {
		return Instance{}, errLeft
	}
	var found *Instance
	err := n.updateMetaLocked(n.tun.metaTimeout, func(m *meta) {
		specs := m.Services[service]
		for i, spec := range specs {
			in, err := ParseInstance(spec)
			if err != nil || in.Addr != addr {
				continue
			}
			in.Weight = weight
			found = &in
			services := cloneServices(m.Services)
			services[service][i] = in.String()
			services[service] = sortDedup(services[service])
			m.Services = services
			return
		}
	})
	if err != nil {
		return Instance{}, err
	}
	if found == nil {
		return Instance{}, fmt.Errorf("%w: %s=%s (it advertises %s); ask the node that fronts it, as ringman members shows",
			ErrNotLocal, service, addr, n.servicesList())
	}
	return *found, nil
}

// servicesList lists this node's instances as --service takes them.
func (n *Node) servicesList() string {
	n.metaMu.Lock()
	defer n.metaMu.Unlock()
	var parts []string
	for name, specs := range n.local.Services {
		for _, spec := range specs {
			parts = append(parts, name+"="+spec)
		}
	}
	if len(parts) == 0 {
		return "no instance"
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}
