//go:build !race

package discovery

// raceEnabled: see race_test.go.
const raceEnabled = false
