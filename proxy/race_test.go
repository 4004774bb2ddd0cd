//go:build race

package proxy

// raceEnabled: the race detector's shadow memory makes RSS figures meaningless.
const raceEnabled = true
