//go:build race

package faults

const raceNote = "ran with the race detector (-race)"
