package main

import (
	"fmt"
	"os"
	"testing"
	"time"
)

func TestStatFields(t *testing.T) {
	// A command with spaces and a ')' in it: fields are counted from the last ')'.
	f, err := statFields("1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 98765 1000 10\n")
	if err != nil {
		t.Fatal(err)
	}
	if f[0] != "S" || f[11] != "7" || f[12] != "3" || f[19] != "98765" {
		t.Fatalf("fields %q", f)
	}
}

func TestRunIDAndOwner(t *testing.T) {
	st, err := procStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	self := fmt.Sprintf("%d-%d", os.Getpid(), st)
	if !ownerAlive(self) {
		t.Errorf("ownerAlive(%q) = false for this very process", self)
	}
	// Same pid, another start time: a recycled pid is not the owner.
	if ownerAlive(fmt.Sprintf("%d-%d", os.Getpid(), st+1)) {
		t.Error("a recycled pid was taken for the owner")
	}
	for _, bad := range []string{"1", "", "x-1", "-5-1", "12-x"} {
		if _, _, ok := parseRunID(bad); ok {
			t.Errorf("parseRunID(%q) ok", bad)
		}
	}
}

func TestStaleOwner(t *testing.T) {
	st, _ := procStartTime(os.Getpid())
	now := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	recent, old := "2026-01-02 14:55:00 +0000 UTC", "2026-01-02 14:00:00 +0000 UTC"
	cases := []struct {
		value, created string
		stale          bool
	}{
		{fmt.Sprintf("%d-%d", os.Getpid(), st), old, false},     // alive: never, however old
		{fmt.Sprintf("%d-%d", os.Getpid(), st+1), recent, true}, // gone: at once
		{"1", recent, false},    // legacy, recent: may be running
		{"1", old, true},        // legacy, old
		{"1", "garbage", false}, // unknown age: left alone
	}
	for _, c := range cases {
		if got := staleOwner(c.value, c.created, now); got != c.stale {
			t.Errorf("staleOwner(%q, %q) = %v, want %v", c.value, c.created, got, c.stale)
		}
	}
}
