package broker

import (
	"context"
	"testing"
	"time"

	"github.com/chatserver/chatserver/internal/redistest"
)

// Both stores: a claim is new, then pending, then (accepted) the first id; a
// released claim is new again; a pending claim expires after its own TTL;
// keys are scoped by room and name.
func TestRefs(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	stores := map[string]func(pending time.Duration) Refs{
		"memory": func(pending time.Duration) Refs { return NewMemoryRefs(time.Minute, pending, 0) },
		"redis":  func(pending time.Duration) Refs { return NewRedisRefs(rdb, prefix, 0, time.Minute, pending, nil) },
	}
	ctx := context.Background()
	for name, newRefs := range stores {
		t.Run(name, func(t *testing.T) {
			r := newRefs(300 * time.Millisecond)
			k := r.Key("lobby", "alice", "r1")
			if k == r.Key("lobby", "bob", "r1") || k == r.Key("ops", "alice", "r1") || k == r.Key("lobby", "alice", "r2") {
				t.Fatal("keys are not scoped by room, name and ref")
			}
			claim := func(want RefState, wantID string) {
				t.Helper()
				if id, st := r.Claim(ctx, k); st != want || id != wantID {
					t.Fatalf("claim: %v %q, want %v %q", st, id, want, wantID)
				}
			}
			claim(RefNew, "")
			claim(RefPending, "")
			r.Release(ctx, k)
			claim(RefNew, "")
			r.Accept(ctx, k, "id-1")
			claim(RefAccepted, "id-1")
			r.Release(ctx, k) // only a pending claim is released
			claim(RefAccepted, "id-1")
			r.Accept(ctx, k, "") // accepted without an envelope (a /who)
			claim(RefAccepted, "")

			k2 := r.Key("lobby", "alice", "r3")
			claim2 := func() RefState { _, st := r.Claim(ctx, k2); return st }
			if claim2() != RefNew || claim2() != RefPending {
				t.Fatal("a second claim is not pending")
			}
			deadline := time.Now().Add(5 * time.Second)
			for claim2() != RefNew { // the pending claim of a dead node expires
				if time.Now().After(deadline) {
					t.Fatal("a pending claim never expired")
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// The memory store holds at most max refs: the oldest go first.
func TestMemoryRefsBounded(t *testing.T) {
	m := NewMemoryRefs(time.Hour, time.Hour, 3)
	ctx := context.Background()
	keys := []string{"a", "b", "c", "d", "e"}
	for _, k := range keys {
		m.Claim(ctx, k)
		m.Accept(ctx, k, "id-"+k)
	}
	if len(m.ids) > 3 {
		t.Fatalf("%d refs held, want at most 3", len(m.ids))
	}
	if _, st := m.Claim(ctx, "e"); st != RefAccepted {
		t.Fatal("the newest ref was evicted")
	}
	if _, st := m.Claim(ctx, "a"); st != RefNew {
		t.Fatal("the oldest ref was kept past the bound")
	}
}
