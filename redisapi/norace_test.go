//go:build !race

package redisapi

const raceEnabled = false
