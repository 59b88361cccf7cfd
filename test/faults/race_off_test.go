//go:build !race

package faults

const raceNote = "ran without the race detector"
