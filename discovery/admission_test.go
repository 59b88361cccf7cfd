package discovery

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/memberlist"
)

// rogueDelegate advertises fixed metadata.
type rogueDelegate struct{ meta []byte }

func (d rogueDelegate) NodeMeta(int) []byte           { return d.meta }
func (rogueDelegate) NotifyMsg([]byte)                {}
func (rogueDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (rogueDelegate) LocalState(bool) []byte          { return nil }
func (rogueDelegate) MergeRemoteState([]byte, bool)   {}

// startRogue starts a raw memberlist node (no ringman checks of its own)
// named name on 127.0.0.1, port 0, gossiping fast, with meta.
func startRogue(t *testing.T, name string, meta []byte) *memberlist.Memberlist {
	t.Helper()
	c := memberlist.DefaultLANConfig()
	c.Name = name
	c.BindAddr = "127.0.0.1"
	c.BindPort = 0
	c.AdvertisePort = 0
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.GossipInterval = 50 * time.Millisecond
	c.PushPullInterval = 200 * time.Millisecond
	c.Delegate = rogueDelegate{meta: meta}
	c.LogOutput = io.Discard
	ml, err := memberlist.Create(c)
	if err != nil {
		t.Fatalf("rogue %.20q: %v", name, err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	return ml
}

// validMeta is metadata that ringman nodes of startNode accept.
func validMeta(services map[string][]string) []byte {
	return meta{Fingerprint: "fp-1", Version: "rogue", Services: services}.encode()
}

// onlyMembers checks that n lists exactly names and serves only their
// instances.
func onlyMembers(n *testNode, names ...string) func() (bool, string) {
	return func() (bool, string) {
		var got []string
		for _, m := range n.Members() {
			got = append(got, fmt.Sprintf("%q", m.Name))
		}
		var want []string
		for _, name := range names {
			want = append(want, fmt.Sprintf("%q", name))
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			return false, fmt.Sprintf("%s lists members %v, want %v", n.Name(), got, want)
		}
		live := n.Live()
		var insts int
		for _, v := range live {
			insts += len(v)
		}
		if insts != len(names) {
			return false, fmt.Sprintf("%s has %d live instances, want %d: %v", n.Name(), insts, len(names), live)
		}
		return true, ""
	}
}

// TestBadNodeNameNeverAMember: a real memberlist node with a name that
// would forge log lines, or a huge one, joins the cluster: it is refused,
// logged once with its name escaped, and never listed.
func TestBadNodeNameNeverAMember(t *testing.T) {
	t.Parallel()
	a := startNode(t, "a", nil)
	b := startNode(t, "b", seeds(a))
	waitFor(t, 10*time.Second, webIs([]*testNode{a, b}, "a", "b"))
	forged := "evil\nlevel=ERROR msg=\"forged\" \x1b[31mRED"
	long := strings.Repeat("n", 5000)
	for _, name := range []string{forged, long} {
		rogue := startRogue(t, name, validMeta(map[string][]string{"web": {"rogue.test:80"}}))
		_, _ = rogue.Join([]string{a.Addr()}) // a refuses the merge; what rogue thinks does not matter
	}
	// The rogues keep sending alive messages (gossip and push/pull every
	// 200 ms): watch the members until many were refused.
	deadline := time.Now().Add(20 * time.Second)
	for a.refusedAlive.Load() < 20 {
		for _, n := range []*testNode{a, b} {
			if ok, why := onlyMembers(n, "a", "b")(); !ok {
				t.Fatalf("a rogue got in: %s", why)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not reached within 20s: a refused %d alive messages, want >= 20", a.refusedAlive.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	lines := a.logs.lines("refused node with an invalid name")
	if len(lines) != 2 {
		t.Errorf("a logged %d refusal lines, want one per rogue (2):\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for _, n := range []*testNode{a, b} {
		// Our admission code logs each rogue once. memberlist's own lines
		// may name a rogue too (it refutes the suspicions a rogue sends
		// when a loaded machine delays acks): they are memberlist's, and
		// capped in length below.
		for _, line := range n.logs.lines("level=") {
			if strings.Contains(line, "level=INFO") || strings.Contains(line, "refused node with an invalid name") || strings.Contains(line, "memberlist:") {
				continue
			}
			if strings.Contains(line, "evil") || strings.Contains(line, long[:64]) {
				t.Errorf("%s: unexpected line about a rogue (one per refused message?): %.300s", n.Name(), line)
			}
		}
		out := n.logs.String()
		if strings.Contains(out, "\x1b") || strings.Contains(out, long) {
			t.Errorf("%s logged a raw escape character or the whole 5000-byte name", n.Name())
		}
		for line := range strings.SplitSeq(strings.TrimSuffix(out, "\n"), "\n") {
			if !strings.HasPrefix(line, "time=") {
				t.Errorf("%s: log line not made by its logger (forged?): %q", n.Name(), line)
			}
		}
	}
}

func TestValidateNodeName(t *testing.T) {
	for _, name := range []string{"a", "node-1", "web01.dc1.example.com", "ip-10-0-0-1_ec2", "A1", strings.Repeat("x", maxNodeNameLen)} {
		if err := ValidateNodeName(name); err != nil {
			t.Errorf("ValidateNodeName(%q): %v", name, err)
		}
	}
	for _, name := range []string{"", "evil\nlevel=ERROR", "a b", "tab\t", "esc\x1b[31m", "-flag", ".dot", "a/b", "a:1", "a=b", `a"b`, "é", "a\x00", strings.Repeat("x", maxNodeNameLen+1), strings.Repeat("n", 5000)} {
		err := ValidateNodeName(name)
		if err == nil {
			t.Errorf("ValidateNodeName(%q) accepted it", name)
			continue
		}
		if msg := err.Error(); strings.ContainsAny(msg, "\n\t\x1b\x00") || len(msg) > 200 {
			t.Errorf("error for %.20q is not one short escaped line: %q", name, msg)
		}
	}
	logger, _ := newTestLogger(t)
	_, err := Start(Config{Name: "evil\nlevel=ERROR", BindAddr: "127.0.0.1:0", Logger: logger})
	if err == nil || !strings.Contains(err.Error(), `"evil\nlevel=ERROR"`) {
		t.Errorf("Start with a bad name: %v", err)
	}
}

// pushState sends addr one memberlist push/pull carrying a single node state,
// as a rogue peer can (memberlist's own sender panics on metadata over 512
// bytes, the receiver checks nothing), and waits until addr has processed it
// (it closes the connection after merging).
func pushState(t *testing.T, addr, name string, port int, meta []byte, join bool) {
	t.Helper()
	type header struct {
		Nodes        int
		UserStateLen int
		Join         bool
	}
	type nodeState struct {
		Name        string
		Addr        []byte
		Port        uint16
		Meta        []byte
		Incarnation uint32
		State       int
		Vsn         []uint8
	}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	w := bufio.NewWriter(conn)
	_ = w.WriteByte(6) // pushPullMsg
	enc := codec.NewEncoder(w, &codec.MsgpackHandle{})
	if err := enc.Encode(&header{Nodes: 1, Join: join}); err != nil {
		t.Fatal(err)
	}
	st := nodeState{Name: name, Addr: net.ParseIP("127.0.0.1").To4(), Port: uint16(port), Meta: meta,
		Incarnation: 1, Vsn: []uint8{1, 5, 2, 0, 0, 0}}
	if err := enc.Encode(&st); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Fatalf("reading %s's answer: %v", addr, err)
	}
}

// manyInstances returns n distinct instances of service web.
func manyInstances(n int) map[string][]string {
	insts := make([]string, n)
	for i := range insts {
		insts[i] = "10." + strconv.Itoa(i/65536%256) + "." + strconv.Itoa(i/256%256) + "." + strconv.Itoa(i%256) + ":80"
	}
	return map[string][]string{"web": insts}
}

// TestOversizedMetaRefused: a peer advertising more than fits in
// memberlist's 512 bytes (2,000 instances, or a few huge ones) is refused
// and logged once per peer, however many times its state arrives.
func TestOversizedMetaRefused(t *testing.T) {
	t.Parallel()
	a := startNode(t, "a", nil)
	hosts := make([]string, 3)
	for i := range hosts {
		hosts[i] = strings.Repeat("h", 200) + strconv.Itoa(i) + ":80"
	}
	rogues := []struct {
		name string
		meta []byte
	}{
		{"many", validMeta(manyInstances(2000))},
		{"huge", validMeta(map[string][]string{"web": hosts})},
		{"services", validMeta(func() map[string][]string {
			s := map[string][]string{}
			for i := range 200 {
				s["s"+strconv.Itoa(i)] = []string{"h:1"}
			}
			return s
		}())},
	}
	for _, r := range rogues {
		if len(r.meta) <= memberlist.MetaMaxSize {
			t.Fatalf("%s: test metadata is only %d bytes", r.name, len(r.meta))
		}
		port := freePort(t)
		// As a periodic push/pull (the alive delegate decides) and as a
		// join (the merge delegate decides).
		for _, join := range []bool{false, true, false} {
			pushState(t, a.Addr(), r.name, port, r.meta, join)
		}
	}
	if ok, why := onlyMembers(a, "a")(); !ok {
		t.Error(why)
	}
	if got := a.refusedAlive.Load(); got != int64(3*len(rogues)) {
		t.Errorf("a refused %d states, want %d", got, 3*len(rogues))
	}
	for _, line := range a.logs.lines("level=") {
		if !strings.Contains(line, "refused node whose metadata cannot be read") {
			t.Errorf("unexpected line (one per refused message?): %.300s", line)
		}
	}
	for _, r := range rogues {
		lines := a.logs.lines("refused node whose metadata cannot be read", "node="+r.name)
		if len(lines) != 1 {
			t.Errorf("%d refusal lines for %s, want 1", len(lines), r.name)
		}
	}
}

func TestDecodeMetaBounds(t *testing.T) {
	// The largest a node can legitimately advertise decodes.
	for _, s := range []map[string][]string{manyInstances(30)} {
		b := validMeta(s)
		if _, err := decodeMeta(b); err != nil {
			t.Errorf("%d bytes: %v", len(b), err)
		}
	}
	// The fewest instances that do not fit: refused by their size.
	over := 1
	for len(validMeta(manyInstances(over))) <= memberlist.MetaMaxSize {
		over++
	}
	if _, err := decodeMeta(validMeta(manyInstances(over - 1))); err != nil {
		t.Errorf("%d instances (%d bytes): %v", over-1, len(validMeta(manyInstances(over-1))), err)
	}
	for _, n := range []int{over, 2000, 10000} {
		if _, err := decodeMeta(validMeta(manyInstances(n))); !errors.Is(err, errMetaTooLarge) {
			t.Errorf("%d instances: err = %v, want errMetaTooLarge", n, err)
		}
	}
}
