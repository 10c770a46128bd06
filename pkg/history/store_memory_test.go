package history

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

func TestMemoryKeepsNewestInOrder(t *testing.T) {
	tests := []struct {
		name       string
		size, sent int
		limit      int
		wantFirst  int
		wantLen    int
	}{
		{"under size", 100, 10, 0, 0, 10},
		{"exactly size", 100, 100, 0, 0, 100},
		{"150 sent keeps last 100", 100, 150, 0, 50, 100},
		{"limit below kept", 100, 150, 20, 130, 20},
		{"limit above kept", 100, 5, 50, 0, 5},
		{"size one", 1, 3, 0, 2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			m := NewMemory(tt.size)
			for i := 0; i < tt.sent; i++ {
				id := fmt.Sprint(i)
				if err := m.Append(ctx, "r", id, []byte(id)); err != nil {
					t.Fatal(err)
				}
			}
			got, err := m.Recent(ctx, "r", tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.wantLen {
				t.Fatalf("len = %d, want %d", len(got), tt.wantLen)
			}
			for i, e := range got {
				if want := fmt.Sprint(tt.wantFirst + i); e.ID != want || string(e.Frame) != want {
					t.Fatalf("entry %d = %q, want %q", i, e.ID, want)
				}
			}
		})
	}
}

func TestMemoryRoomsAreSeparateAndClear(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(10)
	_ = m.Append(ctx, "a", "1", []byte("x"))
	_ = m.Append(ctx, "b", "2", []byte("y"))
	if err := m.Clear(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Recent(ctx, "a", 0); len(got) != 0 {
		t.Fatalf("a after clear: %v", got)
	}
	if got, _ := m.Recent(ctx, "b", 0); len(got) != 1 || got[0].ID != "2" {
		t.Fatalf("b: %v", got)
	}
}

func TestSince(t *testing.T) {
	es := []Entry{{ID: "a"}, {ID: "b"}, {ID: "c"}}
	tests := []struct {
		id       string
		want     int
		complete bool
	}{
		{"a", 2, true}, {"b", 1, true}, {"c", 0, true}, {"gone", 3, false}, {"", 3, false},
	}
	for _, tt := range tests {
		got, complete := Since(es, tt.id)
		if len(got) != tt.want || complete != tt.complete {
			t.Errorf("Since(%q) = %d entries, complete=%v; want %d, %v", tt.id, len(got), complete, tt.want, tt.complete)
		}
	}
}

func TestValidDropsCorruptEntries(t *testing.T) {
	tests := []struct {
		name    string
		frames  []string
		want    string
		dropped int
	}{
		{"all valid", []string{`{"id":"a"}`, `{"id":"b"}`}, "a,b", 0},
		{"one corrupt in the middle", []string{`{"id":"a"}`, `{"id":`, `{"id":"c"}`}, "a,c", 1},
		{"corrupt first and last", []string{`garbage`, `{"id":"b"}`, "\xff"}, "b", 2},
		{"empty", nil, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var es []Entry
			for _, f := range tt.frames {
				es = append(es, Entry{ID: IDOf([]byte(f)), Frame: []byte(f)})
			}
			got, dropped := Valid(es)
			var ids []string
			for _, e := range got {
				ids = append(ids, e.ID)
			}
			if strings.Join(ids, ",") != tt.want || dropped != tt.dropped {
				t.Fatalf("Valid = %v (dropped %d), want %s (dropped %d)", ids, dropped, tt.want, tt.dropped)
			}
		})
	}
}

func TestIDOf(t *testing.T) {
	tests := []struct{ frame, want string }{
		{`{"id":"abc","type":"message"}`, "abc"},    // id first: read without decoding
		{`{"type":"message","id":"abc"}`, "abc"},    // elsewhere: decoded
		{`{"id":"a\"b","type":"message"}`, `a"b`},   // escaped: decoded
		{`{"id":"a\u00e9","type":"message"}`, "aé"}, // escaped: decoded
		{`not json`, ""},
		{`{"type":"message"}`, ""},
	}
	for _, tt := range tests {
		if got := IDOf([]byte(tt.frame)); got != tt.want {
			t.Errorf("IDOf(%s) = %q, want %q", tt.frame, got, tt.want)
		}
	}
}
