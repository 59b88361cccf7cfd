package faults

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// TestLabSweep: what a run that died left behind (its lock is free) is
// removed by the next run; what a live run owns (its lock is held) is not;
// Close removes everything its lab made.
func TestLabSweep(t *testing.T) {
	if why := missing(); why != "" {
		t.Skip("fault suite skipped: " + why)
	}
	ctx := t.Context()
	live, err := newLab(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { live.Close() })
	if _, err := live.addNamespace(ctx, 1); err != nil {
		t.Fatal(err)
	}

	// A dead run: a hub with its uplink, a node namespace, a lock file
	// nobody holds.
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	dead := hex.EncodeToString(b[:])
	hub, ns, uplink := namePrefix+"-"+dead+"-hub", namePrefix+"-"+dead+"-n1", namePrefix+dead+"h"
	for _, args := range [][]string{
		{"netns", "add", hub},
		{"netns", "add", ns},
		{"link", "add", uplink, "type", "veth", "peer", "name", "uplink", "netns", hub},
	} {
		if err := run(ctx, "ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		delNamespace(ctx, hub)
		delNamespace(ctx, ns)
		if linkExists(uplink) {
			run(ctx, "ip", "link", "del", uplink)
		}
	})
	lock := filepath.Join(lockDir, dead+".lock")
	if err := os.WriteFile(lock, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	sweep(ctx)
	spaces, links := leftovers(ctx)
	if len(spaces[dead]) > 0 || len(links[dead]) > 0 {
		t.Errorf("sweep left the dead run's namespaces %v and links %v", spaces[dead], links[dead])
	}
	if _, err := os.Stat(lock); !os.IsNotExist(err) {
		t.Errorf("sweep left the dead run's lock %s (stat: %v)", lock, err)
	}
	if len(spaces[live.id]) != 2 || len(links[live.id]) != 1 {
		t.Errorf("sweep touched the live run: namespaces %v, links %v; want its hub and node namespaces and its uplink", spaces[live.id], links[live.id])
	}

	if err := live.Close(); err != nil {
		t.Fatal(err)
	}
	spaces, links = leftovers(ctx)
	if len(spaces[live.id]) > 0 || len(links[live.id]) > 0 {
		t.Errorf("Close left namespaces %v and links %v", spaces[live.id], links[live.id])
	}
}
