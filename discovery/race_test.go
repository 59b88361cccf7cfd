//go:build race

package discovery

// raceEnabled is true under -race, which makes gossip work several times
// slower: clusters of 50 or more nodes in one process then starve their own
// probes (and every other test running beside them), so those tests skip
// there and `make test` runs them without -race.
const raceEnabled = true
