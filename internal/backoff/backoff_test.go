package backoff

import (
	"testing"
	"time"
)

func TestCeilingDoublesToMax(t *testing.T) {
	tests := []struct {
		name     string
		min, max time.Duration
		want     []time.Duration // ceilings of successive attempts
	}{
		{"doubles then caps", 100 * time.Millisecond, time.Second,
			[]time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}},
		{"cap not a power of two", 50 * time.Millisecond, 120 * time.Millisecond,
			[]time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 120 * time.Millisecond, 120 * time.Millisecond}},
		{"max below min means min", time.Second, time.Millisecond,
			[]time.Duration{time.Second, time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// rand returning n-1 makes each wait its ceiling.
			b := Backoff{Min: tt.min, Max: tt.max, rand: func(n int64) int64 { return n - 1 }}
			for i, want := range tt.want {
				if got := b.Next(); got != want {
					t.Fatalf("wait %d = %v, want %v", i, got, want)
				}
			}
			b.Reset()
			if got := b.Next(); got != tt.want[0] {
				t.Fatalf("after Reset: %v, want %v", got, tt.want[0])
			}
		})
	}
}

// TestNoOverflow: a loop that has failed for days still waits at most Max.
func TestNoOverflow(t *testing.T) {
	b := Backoff{Min: time.Millisecond, Max: 5 * time.Second}
	for range 10000 {
		b.Next()
	}
	if c := b.Ceiling(); c != 5*time.Second {
		t.Fatalf("ceiling after 10000 attempts = %v", c)
	}
}

// TestJitter: waits fall in [0, ceiling] and are spread, not all equal.
func TestJitter(t *testing.T) {
	b := Backoff{Min: time.Second, Max: time.Second}
	seen := map[time.Duration]bool{}
	for range 100 {
		d := b.Next()
		if d < 0 || d > time.Second {
			t.Fatalf("wait %v outside [0, 1s]", d)
		}
		seen[d] = true
	}
	if len(seen) < 50 {
		t.Fatalf("100 waits took only %d values: no jitter", len(seen))
	}
}
