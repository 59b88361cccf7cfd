//go:build race

package ring

// raceEnabled is true under -race. consistent.New re-sorts its points after
// every member, which costs ~1 s at 1,000 instances and ~15 s under the race
// detector; tests that need such a ring skip under -race (it checks nothing
// concurrent there) and run in the plain `go test`.
const raceEnabled = true
