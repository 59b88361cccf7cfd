//go:build race

package ring

// raceEnabled is true under -race, which makes single-goroutine work about
// ten times slower: placement tests do fewer rounds there (it checks nothing
// concurrent in them), and benchmarks of the library's own 1,000-instance
// ring (consistent.New re-sorts its points after every member) skip.
const raceEnabled = true
