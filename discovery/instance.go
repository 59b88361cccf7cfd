package discovery

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Instance is an instance as a node advertises it, and as --service takes
// it after the service name: "host:port", then optional attributes:
//
//	10.0.0.5:8080,id=web-a,weight=2
//
// id is a stable name that placement hashes instead of the address, so that
// an instance restarted at a new address keeps its keys; weight (default 1,
// 0 to MaxInstanceWeight) scales its share of the keys, 0 keeping it listed
// with none. ramp=K/N is set by the node itself during a slow start
// (Config.SlowStart): the instance counts K/N of its weight. Instances
// travel in this form, canonical (String): attributes in this order, left
// out at their defaults.
type Instance struct {
	Addr   string
	ID     string // "" is Addr
	Weight int
	// Step of Steps is the slow start's progress; Steps 0: none (full weight).
	Step, Steps int
}

// Effective is the weight placement uses: Weight, scaled by the slow
// start's progress.
func (in Instance) Effective() float64 {
	if in.Steps == 0 {
		return float64(in.Weight)
	}
	return float64(in.Weight) * float64(in.Step) / float64(in.Steps)
}

// MaxInstanceWeight bounds the weight= attribute (ring.MaxWeight).
const MaxInstanceWeight = 100

// maxRampSteps bounds the steps of ramp=K/N.
const maxRampSteps = 100

// maxInstanceIDLen bounds the id= attribute.
const maxInstanceIDLen = 128

// ParseInstance parses "host:port[,id=ID][,weight=N]".
func ParseInstance(s string) (Instance, error) {
	addr, attrs, more := strings.Cut(s, ",")
	if err := ValidateInstance(addr); err != nil {
		return Instance{}, err
	}
	in := Instance{Addr: addr, Weight: 1}
	seen := map[string]bool{}
	for more {
		var attr string
		attr, attrs, more = strings.Cut(attrs, ",")
		k, v, ok := strings.Cut(attr, "=")
		if !ok || seen[k] {
			return Instance{}, fmt.Errorf("instance %q: attribute %q: want id=NAME or weight=N, each once", s, attr)
		}
		seen[k] = true
		switch k {
		case "id":
			if err := validateInstanceID(v); err != nil {
				return Instance{}, fmt.Errorf("instance %q: %w", s, err)
			}
			in.ID = v
		case "weight":
			w, err := strconv.Atoi(v)
			if err != nil || w < 0 || w > MaxInstanceWeight {
				return Instance{}, fmt.Errorf("instance %q: weight %q: want 0 to %d", s, v, MaxInstanceWeight)
			}
			in.Weight = w
		case "ramp":
			a, b, _ := strings.Cut(v, "/")
			step, err1 := strconv.Atoi(a)
			steps, err2 := strconv.Atoi(b)
			if err1 != nil || err2 != nil || step < 1 || step >= steps || steps > maxRampSteps {
				return Instance{}, fmt.Errorf("instance %q: ramp %q: want K/N with 1 <= K < N <= %d", s, v, maxRampSteps)
			}
			in.Step, in.Steps = step, steps
		default:
			return Instance{}, fmt.Errorf("instance %q: unknown attribute %q (want id= or weight=)", s, k)
		}
	}
	if in.ID == in.Addr {
		in.ID = ""
	}
	return in, nil
}

// String is the canonical form ParseInstance reads.
func (in Instance) String() string {
	s := in.Addr
	if in.ID != "" && in.ID != in.Addr {
		s += ",id=" + in.ID
	}
	if in.Weight != 1 {
		s += ",weight=" + strconv.Itoa(in.Weight)
	}
	if in.Steps > 0 {
		s += ",ramp=" + strconv.Itoa(in.Step) + "/" + strconv.Itoa(in.Steps)
	}
	return s
}

// Key is what placement hashes: the ID, or the address without one.
func (in Instance) Key() string {
	if in.ID != "" {
		return in.ID
	}
	return in.Addr
}

func validateInstanceID(id string) error {
	if id == "" {
		return errors.New("empty id")
	}
	if len(id) > maxInstanceIDLen {
		return fmt.Errorf("id %.20q... is over %d bytes", id, maxInstanceIDLen)
	}
	for _, c := range id {
		if c <= ' ' || c == 0x7f || c == '=' || c == ',' || c == '"' || c == '\\' {
			return fmt.Errorf("id %q: character %q not allowed", id, c)
		}
	}
	return nil
}

// canonicalInstance parses s and returns its canonical form.
func canonicalInstance(s string) (string, error) {
	in, err := ParseInstance(s)
	if err != nil {
		return "", err
	}
	return in.String(), nil
}
