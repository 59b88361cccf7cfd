package discovery

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// A query asks every other member something and collects the answers, as
// serf's queries do (memberlist has none): the request, sent over TCP to
// each member in the cluster, carries a random ID; each member answers with
// a message of its own, over TCP, that carries the ID back; and deliver
// hands that answer to the query waiting for it. The message kinds and
// their bodies are the caller's (keys.go); memberQuery does the sending,
// the waiting, and the account of who answered and who did not, and why.

// Why a member has no answer in a query's outcome.
var (
	// errMemberFailed and errMemberLeft: the member was not asked. It is
	// remembered (for forgetAfter) but not in the cluster.
	errMemberFailed = errors.New("node is failed (unreachable)")
	errMemberLeft   = errors.New("node left the cluster")
	// errUnreachable: the request could not be sent to it.
	errUnreachable = errors.New("cannot reach it")
	// errNoAnswer: it was sent, and no answer came before the deadline, the
	// caller's cancellation or this node's shutdown.
	errNoAnswer = errors.New("no answer")
)

// memberQuery runs the queries of one kind, whose answers are of type A.
//
// Concurrency: ask may run in several goroutines at once, each waiting for
// its own answers; deliver is called from memberlist's receive goroutines
// and never blocks. mu guards waiting only, a leaf lock held for a map
// operation.
type memberQuery[A any] struct {
	members *memberTable
	send    func(to *memberlist.Node, msg []byte) error // memberlist's SendReliable
	done    <-chan struct{}                             // closed at shutdown: waiting queries end

	mu      sync.Mutex
	waiting map[uint64]chan<- queryReply[A] // by query ID
}

// queryReply is an answer as it arrives: from names the member that sent it.
type queryReply[A any] struct {
	from   string
	answer A
}

// queryOutcome is what one member did with a query.
type queryOutcome[A any] struct {
	name, addr string
	answer     A
	err        error // nil: answer is the member's; else wraps one of the errors above
}

func newMemberQuery[A any](members *memberTable, send func(*memberlist.Node, []byte) error, done <-chan struct{}) *memberQuery[A] {
	return &memberQuery[A]{members: members, send: send, done: done, waiting: make(map[uint64]chan<- queryReply[A])}
}

// ask sends request(id) to every other member in the cluster, joinParallel
// at a time, and waits until each has answered or cannot be reached, or
// until timeout passes, ctx ends or the node shuts down. It returns one
// outcome per other member (those failed or left too, not asked), sorted
// by name.
func (q *memberQuery[A]) ask(ctx context.Context, timeout time.Duration, request func(id uint64) []byte) []queryOutcome[A] {
	var out []queryOutcome[A]
	var asked []*memberlist.Node
	for _, p := range q.members.others() {
		switch p.status {
		case StatusFailed:
			out = append(out, queryOutcome[A]{name: p.node.Name, addr: p.node.FullAddress().Addr, err: errMemberFailed})
		case StatusLeft:
			out = append(out, queryOutcome[A]{name: p.node.Name, addr: p.node.FullAddress().Addr, err: errMemberLeft})
		default:
			asked = append(asked, p.node)
		}
	}
	if len(asked) > 0 {
		out = append(out, q.collect(ctx, timeout, asked, request)...)
	}
	slices.SortFunc(out, func(a, b queryOutcome[A]) int { return strings.Compare(a.name, b.name) })
	return out
}

// collect sends the request to each of asked and waits for their answers.
func (q *memberQuery[A]) collect(ctx context.Context, timeout time.Duration, asked []*memberlist.Node, request func(id uint64) []byte) []queryOutcome[A] {
	id := rand.Uint64()
	replies := make(chan queryReply[A], 2*len(asked)) // room for duplicates: deliver never blocks
	unreachable := make(chan queryOutcome[A], len(asked))
	q.mu.Lock()
	q.waiting[id] = replies
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		delete(q.waiting, id)
		q.mu.Unlock()
	}()

	msg := request(id)
	// Not waited for: a send to a dead host can take memberlist's
	// TCPTimeout, longer than we wait; the channel never blocks it.
	go sendEach(q.send, asked, msg, func(i int, err error) {
		if err != nil {
			to := asked[i]
			unreachable <- queryOutcome[A]{name: to.Name, addr: to.FullAddress().Addr, err: fmt.Errorf("%w: %v", errUnreachable, err)}
		}
	})

	byName := make(map[string]*memberlist.Node, len(asked))
	for _, to := range asked {
		byName[to.Name] = to
	}
	got := make(map[string]queryOutcome[A], len(asked))
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	why := fmt.Errorf("%w within %v", errNoAnswer, timeout)
wait:
	for len(got) < len(asked) {
		select {
		case r := <-replies:
			to, ok := byName[r.from]
			if _, dup := got[r.from]; ok && !dup {
				got[r.from] = queryOutcome[A]{name: r.from, addr: to.FullAddress().Addr, answer: r.answer}
			}
		case o := <-unreachable:
			if _, dup := got[o.name]; !dup {
				got[o.name] = o
			}
		case <-timer.C:
			break wait
		case <-ctx.Done():
			why = fmt.Errorf("%w before the request was cancelled", errNoAnswer)
			break wait
		case <-q.done:
			why = fmt.Errorf("%w before this node shut down", errNoAnswer)
			break wait
		}
	}
	out := make([]queryOutcome[A], 0, len(asked))
	for _, to := range asked {
		o, ok := got[to.Name]
		if !ok {
			o = queryOutcome[A]{name: to.Name, addr: to.FullAddress().Addr, err: why}
		}
		out = append(out, o)
	}
	return out
}

// deliver hands an answer to the query with that ID, and reports whether
// one was waiting (a late answer finds none).
func (q *memberQuery[A]) deliver(id uint64, from string, answer A) bool {
	q.mu.Lock()
	ch := q.waiting[id]
	q.mu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case ch <- queryReply[A]{from: from, answer: answer}:
	default:
	}
	return true
}
