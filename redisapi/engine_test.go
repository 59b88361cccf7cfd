package redisapi

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

var engineFlag = flag.String("engine", "both",
	`connection engine the tests run against: "eventloop", "goroutine" or "both" (one after the other); fuzzing takes one, the event loop for "both"`)

// TestMain runs the whole suite once per connection engine, so that every
// guarantee is checked for both.
func TestMain(m *testing.M) {
	flag.Parse()
	var engines []bool // useEventLoop values
	switch *engineFlag {
	case "both":
		engines = []bool{false}
		if eventLoopSupported {
			engines = []bool{true, false}
		}
	case "eventloop":
		if !eventLoopSupported {
			fmt.Fprintln(os.Stderr, "-engine=eventloop: no event loop on this platform")
			os.Exit(2)
		}
		engines = []bool{true}
	case "goroutine":
		engines = []bool{false}
	default:
		fmt.Fprintf(os.Stderr, "-engine=%q: want eventloop, goroutine or both\n", *engineFlag)
		os.Exit(2)
	}
	if fuzzing() {
		// A fuzzing run (and each of its workers) must call m.Run once.
		engines = engines[:1]
	}
	code := 0
	for _, ev := range engines {
		useEventLoop = ev
		if testing.Verbose() {
			fmt.Printf("=== engine %s\n", engineName(ev))
		}
		if c := m.Run(); c != 0 {
			code = c
		}
	}
	os.Exit(code)
}

func fuzzing() bool {
	for _, name := range []string{"test.fuzz", "test.fuzzworker"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			return true
		}
	}
	return false
}

func engineName(eventLoop bool) string {
	if eventLoop {
		return "eventloop"
	}
	return "goroutine"
}
