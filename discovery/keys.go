package discovery

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Keyring management across the cluster (ringman keys, like serf keys).
//
// The node that is asked (the origin) applies the change to its own
// keyring, then asks every other member with a query (query.go): a keyring
// request goes to each over TCP (SendReliable: encrypted with the origin's
// primary key, like all gossip), and each member applies it, saves its
// keyring and answers with its keys over TCP. The origin waits for every
// answer up to keyTimeout and reports, per node, what happened: applied, the
// node's own error, unreachable, no answer, or failed or left (down: it
// missed the change; such members stay remembered for an hour). Requests
// and answers are user messages framed like the others (shared.go), with
// kinds of their own; a node of an older release ignores them and is
// reported as not answering.
//
// Safety: use and remove first list the keyring of every member, and refuse
// (changing nothing) a key that some answering node does not have (use) or
// uses as its primary key (remove); each node checks again when it applies
// the change. A rotation without downtime is: install the new key on all,
// use it on all, remove the old one from all. Each step keeps every pair of
// nodes able to read each other, so no member is ever suspected.
const (
	msgKeyRequest  byte = 2 // then a JSON keyRequest
	msgKeyResponse byte = 3 // then a JSON keyResponse

	// keyTimeout bounds the wait for the answers to one keyring request
	// (use and remove make two: the check, then the change).
	keyTimeout = 5 * time.Second
	// maxKeyRequestsWaiting bounds the requests waiting to be applied;
	// past it a request is dropped and its origin reports no answer.
	maxKeyRequestsWaiting = 64
)

// KeyOp is a keyring operation.
type KeyOp string

const (
	KeyList    KeyOp = "list"    // report the keys of every node
	KeyInstall KeyOp = "install" // add a key (it decrypts; it does not encrypt yet)
	KeyUse     KeyOp = "use"     // make an installed key the primary (encrypting) key
	KeyRemove  KeyOp = "remove"  // drop a key that is not the primary
)

// ErrNotEncrypted is returned by keyring operations on a node that runs
// without gossip encryption: memberlist cannot turn encryption on at run time.
var ErrNotEncrypted = errors.New("gossip is not encrypted on this node (it was started without a key), so it has no keyring to change")

// ErrInvalidKey wraps the errors of malformed keys and unknown operations.
var ErrInvalidKey = errors.New("invalid keyring request")

// KeyRefusedError is a keyring change refused by the safety rules before
// anything changed.
type KeyRefusedError struct{ Reason string }

func (e *KeyRefusedError) Error() string { return e.Reason }

// KeyStore saves this node's keyring, so that a restarted node keeps the
// keys of the last rotation. SaveKeys gets every key, primary first; it is
// called once per change, never concurrently, and the change is undone
// when it fails.
type KeyStore interface {
	SaveKeys(keys [][]byte) error
}

// KeyResult is what every node did with one keyring operation.
type KeyResult struct {
	Op KeyOp
	// Answers has one entry per node asked (this one included) and per
	// failed or left member (not asked: it missed the change), sorted by
	// name.
	Answers []KeyAnswer
}

// KeyAnswer is one node's part of a KeyResult.
type KeyAnswer struct {
	Node string
	Addr string
	// Keys are the node's keys after the operation, primary first; nil
	// when Err is set.
	Keys [][]byte
	// Err, when set, says why the node did not do it: its own error, no
	// answer, unreachable, or failed or left (so it missed the change).
	Err string
}

// KeyCount is one key and on how many answering nodes it is installed,
// and primary.
type KeyCount struct {
	Key       []byte
	Installed int
	Primary   int
}

// Answered is how many nodes did the operation (answered without error).
func (r KeyResult) Answered() int {
	n := 0
	for _, a := range r.Answers {
		if a.Err == "" {
			n++
		}
	}
	return n
}

// Failed returns the answers with an error.
func (r KeyResult) Failed() []KeyAnswer {
	var out []KeyAnswer
	for _, a := range r.Answers {
		if a.Err != "" {
			out = append(out, a)
		}
	}
	return out
}

// Keys counts, over the nodes that answered, where each key is installed
// and primary: most widely primary first, then most widely installed.
func (r KeyResult) Keys() []KeyCount {
	var out []KeyCount
	find := func(k []byte) *KeyCount {
		for i := range out {
			if bytes.Equal(out[i].Key, k) {
				return &out[i]
			}
		}
		out = append(out, KeyCount{Key: k})
		return &out[len(out)-1]
	}
	for _, a := range r.Answers {
		for i, k := range a.Keys {
			c := find(k)
			c.Installed++
			if i == 0 {
				c.Primary++
			}
		}
	}
	slices.SortFunc(out, func(a, b KeyCount) int {
		if a.Primary != b.Primary {
			return b.Primary - a.Primary
		}
		if a.Installed != b.Installed {
			return b.Installed - a.Installed
		}
		return bytes.Compare(a.Key, b.Key)
	})
	return out
}

// keyRequest asks a member to apply Op (with Key) and answer to From.
type keyRequest struct {
	ID   uint64 `json:"id"`
	From string `json:"from"`
	Op   KeyOp  `json:"op"`
	Key  []byte `json:"key,omitempty"`
}

// keyResponse is a member's answer to a keyRequest.
type keyResponse struct {
	ID   uint64   `json:"id"`
	Node string   `json:"node"`
	Keys [][]byte `json:"keys,omitempty"`
	Err  string   `json:"err,omitempty"`
}

// keyState is a Node's keyring and its requests in flight. Changes come
// from Keys' callers (this node's own part) and from keyLoop (other
// members' requests), one at a time under mu.
type keyState struct {
	ring *memberlist.Keyring // nil: gossip is not encrypted
	// mu orders the local changes and their saves (and makes reading the
	// keyring's slice safe: memberlist's RemoveKey shifts it in place).
	// Held while SaveKeys runs; no other lock of this package is taken
	// under it.
	mu    sync.Mutex
	work  chan keyRequest // to keyLoop
	query *memberQuery[keyResponse]
}

// initKeys sets up keyring management; Start calls it once the member
// table exists.
func (n *Node) initKeys(ring *memberlist.Keyring) {
	n.keys.ring = ring
	n.keys.work = make(chan keyRequest, maxKeyRequestsWaiting)
	n.keys.query = newMemberQuery[keyResponse](n.table, func(to *memberlist.Node, msg []byte) error { return n.ml.SendReliable(to, msg) }, n.done)
}

// Keys applies op to the keyring of every member and reports what each
// did. key is the raw key (16, 24 or 32 bytes); KeyList takes none. The
// error is ErrShutdown, ErrNotEncrypted, an ErrInvalidKey, or a
// *KeyRefusedError (nothing changed); a node that failed is reported in the
// result, not as an error. It waits up to keyTimeout (twice for use and
// remove) or until ctx ends.
func (n *Node) Keys(ctx context.Context, op KeyOp, key []byte) (KeyResult, error) {
	if n.isClosed() {
		return KeyResult{}, ErrShutdown
	}
	if err := checkKeyOp(op, key); err != nil {
		return KeyResult{}, err
	}
	if n.keys.ring == nil {
		return KeyResult{}, ErrNotEncrypted
	}
	if op == KeyList {
		key = nil
	}
	if op == KeyUse || op == KeyRemove {
		list := n.keyQuery(ctx, KeyList, nil)
		var bad []string
		answered := 0
		for _, a := range list.Answers {
			if a.Err != "" {
				continue
			}
			answered++
			i := slices.IndexFunc(a.Keys, func(k []byte) bool { return bytes.Equal(k, key) })
			if (op == KeyUse && i < 0) || (op == KeyRemove && i == 0) {
				bad = append(bad, a.Node)
			}
		}
		if len(bad) > 0 {
			if op == KeyUse {
				return list, &KeyRefusedError{fmt.Sprintf("key %s is not installed on %d of %d answering nodes (%s): install it on every node first",
					keyID(key), len(bad), answered, nameList(bad))}
			}
			return list, &KeyRefusedError{fmt.Sprintf("key %s is the primary key on %d of %d answering nodes (%s): use another key on every node first",
				keyID(key), len(bad), answered, nameList(bad))}
		}
	}
	return n.keyQuery(ctx, op, key), nil
}

// checkKeyOp validates an operation and its key.
func checkKeyOp(op KeyOp, key []byte) error {
	switch op {
	case KeyList:
		return nil
	case KeyInstall, KeyUse, KeyRemove:
		if memberlist.ValidateKey(key) != nil {
			return fmt.Errorf("%w: key is %d bytes; want 16, 24 or 32 (AES-128, AES-192, AES-256)", ErrInvalidKey, len(key))
		}
		return nil
	default:
		return fmt.Errorf("%w: unknown operation %q; want list, install, use or remove", ErrInvalidKey, op)
	}
}

// keyQuery applies op here, asks every other member to apply it, and
// collects the answers. op and key are valid.
func (n *Node) keyQuery(ctx context.Context, op KeyOp, key []byte) KeyResult {
	res := KeyResult{Op: op}
	keys, err := n.applyKeyOp(op, key, n.cfg.Name)
	res.Answers = append(res.Answers, keyAnswer(n.cfg.Name, n.addr, keys, err))
	outcomes := n.keys.query.ask(ctx, n.tun.keyTimeout, func(id uint64) []byte {
		body, _ := json.Marshal(keyRequest{ID: id, From: n.cfg.Name, Op: op, Key: key}) // cannot fail
		return append([]byte{msgKeyRequest}, body...)
	})
	for _, o := range outcomes {
		switch {
		case errors.Is(o.err, errMemberFailed), errors.Is(o.err, errMemberLeft):
			// It may not be able to rejoin with the keys it has.
			res.Answers = append(res.Answers, KeyAnswer{Node: o.name, Addr: o.addr, Err: o.err.Error() + ", so it missed this change"})
		case o.err != nil:
			res.Answers = append(res.Answers, KeyAnswer{Node: o.name, Addr: o.addr, Err: o.err.Error()})
		default:
			var err error
			if o.answer.Err != "" {
				err = errors.New(o.answer.Err)
			}
			res.Answers = append(res.Answers, keyAnswer(o.name, o.addr, o.answer.Keys, err))
		}
	}
	slices.SortFunc(res.Answers, func(a, b KeyAnswer) int { return strings.Compare(a.Node, b.Node) })
	return res
}

func keyAnswer(node, addr string, keys [][]byte, err error) KeyAnswer {
	if err != nil {
		return KeyAnswer{Node: node, Addr: addr, Err: err.Error()}
	}
	return KeyAnswer{Node: node, Addr: addr, Keys: keys}
}

// applyKeyOp applies op to this node's keyring, saves the result, and
// returns the keys, primary first. A change whose save fails is undone.
// Installing a key that is there and removing one that is not change
// nothing and succeed.
func (n *Node) applyKeyOp(op KeyOp, key []byte, from string) ([][]byte, error) {
	if err := checkKeyOp(op, key); err != nil {
		return nil, err
	}
	kr := n.keys.ring
	if kr == nil {
		return nil, ErrNotEncrypted
	}
	n.keys.mu.Lock()
	defer n.keys.mu.Unlock()
	before := slices.Clone(kr.GetKeys())
	i := slices.IndexFunc(before, func(k []byte) bool { return bytes.Equal(k, key) })
	var undo func()
	switch {
	case op == KeyList:
		return before, nil
	case op == KeyInstall && i < 0:
		if err := kr.AddKey(slices.Clone(key)); err != nil {
			return nil, err
		}
		undo = func() { _ = kr.RemoveKey(key) } // the last key: RemoveKey moves nothing
	case op == KeyUse && i < 0:
		return nil, fmt.Errorf("key %s is not installed on this node", keyID(key))
	case op == KeyUse && i > 0:
		if err := kr.UseKey(key); err != nil {
			return nil, err
		}
		undo = func() { _ = kr.UseKey(before[0]) }
	case op == KeyRemove && i == 0:
		return nil, fmt.Errorf("key %s is the primary key on this node; use another key first", keyID(key))
	case op == KeyRemove && i > 0:
		// memberlist v0.7.0's RemoveKey shifts the keys after the removed
		// one in place, in the slice its packet handler may be reading
		// (GetKeys hands it out): a data race unless the key is the last
		// one, as it is in a rotation (install, use, remove).
		if err := kr.RemoveKey(key); err != nil {
			return nil, err
		}
		undo = func() { _ = kr.AddKey(before[i]) }
	default:
		return before, nil // nothing to change
	}
	after := slices.Clone(kr.GetKeys())
	if s := n.cfg.KeyStore; s != nil {
		if err := s.SaveKeys(after); err != nil {
			undo()
			n.log.Error("gossip keyring change not saved; undone", "op", op, "key", keyID(key), "err", err)
			return nil, fmt.Errorf("keyring change not saved, so undone: %w", err)
		}
	}
	n.log.Info("gossip keyring changed", "op", op, "key", keyID(key), "requested_by", from,
		"keys", len(after), "primary", keyID(after[0]))
	return after, nil
}

// receiveKeyRequest hands a request to keyLoop without blocking memberlist.
func (n *Node) receiveKeyRequest(buf []byte) {
	var req keyRequest
	if err := json.Unmarshal(buf, &req); err != nil {
		n.log.Warn("ignored unreadable keyring request", "bytes", len(buf), "err", err)
		return
	}
	select {
	case n.keys.work <- req:
	default:
		n.log.Warn("keyring request dropped: too many waiting; its sender reports no answer", "from", req.From, "op", req.Op)
	}
}

// receiveKeyResponse hands an answer to the request waiting for it.
func (n *Node) receiveKeyResponse(buf []byte) {
	var resp keyResponse
	if err := json.Unmarshal(buf, &resp); err != nil {
		n.log.Warn("ignored unreadable keyring answer", "bytes", len(buf), "err", err)
		return
	}
	if !n.keys.query.deliver(resp.ID, resp.Node, resp) {
		n.log.Debug("keyring answer arrived after its request ended", "node", resp.Node)
	}
}

// keyLoop applies the keyring requests of other members, one at a time,
// and answers each over TCP.
func (n *Node) keyLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.done:
			return
		case req := <-n.keys.work:
			n.answerKeyRequest(req)
		}
	}
}

func (n *Node) answerKeyRequest(req keyRequest) {
	to := n.keyRequester(req.From)
	if to == nil {
		// Answers go only to members: a request names its sender, and
		// we do not connect to addresses a message gives us.
		n.log.Warn("ignored keyring request from a node that is not a member", "from", req.From, "op", req.Op)
		return
	}
	keys, err := n.applyKeyOp(req.Op, req.Key, req.From)
	resp := keyResponse{ID: req.ID, Node: n.cfg.Name, Keys: keys}
	if err != nil {
		resp.Err = err.Error()
	}
	body, _ := json.Marshal(resp) // cannot fail
	if err := n.ml.SendReliable(to, append([]byte{msgKeyResponse}, body...)); err != nil {
		n.log.Warn("cannot answer a keyring request", "to", req.From, "op", req.Op, "err", err)
	}
}

// keyRequester is the live member named from, where answers to its
// keyring requests go, or nil. It asks memberlist, not our member table:
// the table learns of a join or a failure a moment later (events are
// handed off), and a request may arrive in that moment.
func (n *Node) keyRequester(from string) *memberlist.Node {
	for _, node := range n.ml.Members() {
		if node.Name == from {
			return &memberlist.Node{Name: node.Name, Addr: slices.Clone(node.Addr), Port: node.Port}
		}
	}
	return nil
}

// keyID names a key in logs and messages without revealing it: the first
// 8 hex digits of its SHA-256.
func keyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:4])
}

// nameList joins names for a message, at most 10 of them.
func nameList(names []string) string {
	slices.Sort(names)
	if len(names) > 10 {
		return strings.Join(names[:10], ", ") + fmt.Sprintf(" and %d more", len(names)-10)
	}
	return strings.Join(names, ", ")
}
