package ring

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Instance is one member of a ring as an operator describes it.
type Instance struct {
	// Addr is what lookups answer: the instance's current host:port.
	Addr string
	// ID is what placement hashes, "" for Addr. An instance that restarts
	// at a new address with the same ID keeps every key it owned.
	ID string
	// Weight scales the instance's virtual points (ReplicationFactor ×
	// Weight, at least one) and its load cap, and so its share of the
	// partitions: an instance of weight 2 owns about twice what one of
	// weight 1 does. 0 means 1; at most MaxWeight. Fractions are for slow
	// start, which ramps a weight up in steps.
	Weight float64
}

// MaxWeight bounds Instance.Weight: a weight is relative to the others, and
// each unit costs ReplicationFactor virtual points (12 bytes each in the
// Builder, and a rebuild walks them all).
const MaxWeight = 100

// key is what placement hashes.
func (in Instance) key() string {
	if in.ID != "" {
		return in.ID
	}
	return in.Addr
}

// weight is Weight with 0 read as 1.
func (in Instance) weight() float64 {
	if in.Weight == 0 {
		return 1
	}
	return in.Weight
}

// points is how many virtual points the instance gets with rf per unit of
// weight: rf × weight rounded, at least 1. Weight 1 gives rf, the unweighted
// placement.
func (in Instance) points(rf int) int {
	return max(1, int(math.Round(float64(rf)*in.weight())))
}

// ErrDuplicateInstance is returned for two instances with the same ID, or
// the same address, that differ otherwise.
var ErrDuplicateInstance = errors.New("ring: duplicate instance")

// normalizeInstances checks insts and returns them sorted by key, exact
// duplicates dropped.
func normalizeInstances(insts []Instance) ([]Instance, error) {
	set := slices.Clone(insts)
	for _, in := range set {
		if in.Addr == "" {
			return nil, ErrInvalidInstance
		}
		if w := in.Weight; math.IsNaN(w) || w < 0 || w > MaxWeight {
			return nil, fmt.Errorf("ring: instance %s: weight %g, want 0 to %d", in.Addr, w, MaxWeight)
		}
	}
	slices.SortFunc(set, func(x, y Instance) int {
		if c := strings.Compare(x.key(), y.key()); c != 0 {
			return c
		}
		if c := strings.Compare(x.Addr, y.Addr); c != 0 {
			return c
		}
		return cmpFloat(x.weight(), y.weight())
	})
	set = slices.CompactFunc(set, func(x, y Instance) bool {
		return x.key() == y.key() && x.Addr == y.Addr && x.weight() == y.weight()
	})
	for i := 1; i < len(set); i++ {
		if set[i].key() == set[i-1].key() {
			return nil, fmt.Errorf("%w: id %q at %s (weight %g) and %s (weight %g)", ErrDuplicateInstance,
				set[i].key(), set[i-1].Addr, set[i-1].weight(), set[i].Addr, set[i].weight())
		}
	}
	byAddr := slices.Clone(set)
	slices.SortFunc(byAddr, func(x, y Instance) int { return strings.Compare(x.Addr, y.Addr) })
	for i := 1; i < len(byAddr); i++ {
		if byAddr[i].Addr == byAddr[i-1].Addr {
			return nil, fmt.Errorf("%w: address %s has ids %q and %q", ErrDuplicateInstance, byAddr[i].Addr, byAddr[i-1].key(), byAddr[i].key())
		}
	}
	for i := range set {
		set[i].Weight = set[i].weight()
	}
	return slices.Clip(set), nil
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
