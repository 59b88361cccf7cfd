package discovery

import "time"

// slowStartSteps is how many steps a slow start takes: the instances count
// 1/10 of their weight, then 2/10, ..., each step a tenth of
// Config.SlowStart, gossiped by this node so that every node places the
// same step. Each step only adds virtual points, so keys only move to the
// instances that ramp, never back.
const slowStartSteps = 10

// withRamp returns services with every instance at step of slowStartSteps
// (the last step: no ramp attribute, full weight).
func withRamp(services map[string][]string, step int) map[string][]string {
	out := make(map[string][]string, len(services))
	for name, specs := range services {
		next := make([]string, 0, len(specs))
		for _, spec := range specs {
			in, err := ParseInstance(spec)
			if err != nil {
				next = append(next, spec) // never: this node's own, checked at Start
				continue
			}
			in.Step, in.Steps = step, slowStartSteps
			if step >= slowStartSteps {
				in.Step, in.Steps = 0, 0
			}
			next = append(next, in.String())
		}
		out[name] = sortDedup(next)
	}
	return out
}

// restartRamp asks rampLoop to begin again from the first step (the node
// was just undrained). setDrain has already advertised that step.
func (n *Node) restartRamp() {
	select {
	case n.rampRestart <- struct{}{}:
	default: // one pending restart is enough
	}
}

// rampLoop advances the slow start every SlowStart/slowStartSteps from the
// first step, which Start (or an undrain) advertised.
func (n *Node) rampLoop(every time.Duration) {
	defer n.wg.Done()
	step := 1
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-n.rampRestart:
			step = 1
			t.Reset(every)
			continue
		case <-t.C:
		}
		if step >= slowStartSteps {
			continue // done; waits for a restart
		}
		step++
		if err := n.setRamp(step); err != nil {
			return // shut down or left
		}
		if step < slowStartSteps {
			t.Reset(every)
		} else {
			n.log.Info("slow start done: instances at full weight")
		}
	}
}

// setRamp advertises the slow start's step.
func (n *Node) setRamp(step int) error {
	n.opMu.Lock()
	defer n.opMu.Unlock()
	if n.closed {
		return ErrShutdown
	}
	if n.left {
		return errLeft
	}
	n.log.Debug("slow start step", "step", step, "of", slowStartSteps)
	return n.updateMetaLocked(n.tun.metaTimeout, func(m *meta) { m.Services = withRamp(m.Services, step) })
}
