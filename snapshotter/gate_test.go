package snapshotter

import (
	"testing"
	"time"
)

// Exclusive waits for the calls in flight, holds new ones while it runs,
// and does not hold them up while it waits.
func TestExclusive(t *testing.T) {
	s := &Snapshotter{}
	s.gate.RLock() // a Prepare in flight
	ran := make(chan struct{})
	go s.Exclusive(func() { close(ran) })
	time.Sleep(50 * time.Millisecond)
	// A new call gets in while Exclusive waits.
	got := make(chan struct{})
	go func() { s.gate.RLock(); s.gate.RUnlock(); close(got) }()
	select {
	case <-got:
	case <-time.After(time.Second):
		t.Fatal("a new call waited behind Exclusive")
	}
	select {
	case <-ran:
		t.Fatal("Exclusive ran while a call was in flight")
	default:
	}
	s.gate.RUnlock()
	select {
	case <-ran:
	case <-time.After(time.Second):
		t.Fatal("Exclusive did not run once the call was done")
	}
}
