package history_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/chatserver/chatserver/internal/redistest"
	"github.com/chatserver/chatserver/pkg/history"
)

// Both stores remove exactly the one entry, keep the others in order, answer
// ErrNotFound for ids they do not hold, and append after a delete as before.
// (TestRedisDeleteQueued deletes an entry not yet written.)
func TestDelete(t *testing.T) {
	stores := []struct {
		name string
		open func(t *testing.T) (history.Store, func())
	}{
		{"memory", func(*testing.T) (history.Store, func()) { return history.NewMemory(5), func() {} }},
		{"redis written", func(t *testing.T) (history.Store, func()) {
			s := openRedis(t, redistest.SharedURL, redistest.Prefix(t), func(o *history.RedisOptions) { o.Size = 5 })
			return s, func() { flush(t, s) }
		}},
	}
	tests := []struct {
		name    string
		appends int // frames 0..appends-1 into room "r" (size 5 keeps the last 5)
		del     string
		room    string
		wantErr error
		want    []string // ids of "r" after, oldest first (nil: not checked, Recent fails)
	}{
		{"middle", 3, "id-001", "r", nil, []string{"id-000", "id-002"}},
		{"oldest of a wrapped ring", 7, "id-002", "r", nil, []string{"id-003", "id-004", "id-005", "id-006"}},
		{"newest", 3, "id-002", "r", nil, []string{"id-000", "id-001"}},
		{"evicted", 7, "id-000", "r", history.ErrNotFound, []string{"id-002", "id-003", "id-004", "id-005", "id-006"}},
		{"unknown id", 2, "nope", "r", history.ErrNotFound, []string{"id-000", "id-001"}},
		{"other room", 2, "id-000", "other", history.ErrNotFound, []string{"id-000", "id-001"}},
		{"empty id", 2, "", "r", history.ErrNotFound, []string{"id-000", "id-001"}},
	}
	for _, st := range stores {
		for _, tt := range tests {
			t.Run(st.name+"/"+tt.name, func(t *testing.T) {
				ctx := context.Background()
				s, settle := st.open(t)
				appendN(t, s, "r", 0, tt.appends)
				settle()
				err := s.Delete(ctx, tt.room, tt.del)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Delete = %v, want %v", err, tt.wantErr)
				}
				// An append after the delete lands after the newest.
				appendN(t, s, "r", 100, 101)
				settle()
				got, err := s.Recent(ctx, "r", 0)
				if err != nil {
					t.Fatal(err)
				}
				want := append(slices.Clone(tt.want), "id-100")
				if len(want) > 5 {
					want = want[len(want)-5:]
				}
				if ids := idsOf(got); !slices.Equal(ids, want) {
					t.Fatalf("after Delete: %v, want %v", ids, want)
				}
			})
		}
	}
}

// A frame deleted while still queued (Redis down) is never written.
func TestRedisDeleteQueued(t *testing.T) {
	ctx := context.Background()
	srv := redistest.NewServer(t) // not started: appends wait in the queue
	s := openRedis(t, srv.URL(), "", nil)
	appendN(t, s, "r", 0, 3)
	if err := s.Delete(ctx, "r", "id-001"); err != nil {
		t.Fatal(err)
	}
	srv.Start()
	flush(t, s)
	got, err := s.Recent(ctx, "r", 0)
	if err != nil {
		t.Fatal(err)
	}
	if ids := idsOf(got); !slices.Equal(ids, []string{"id-000", "id-002"}) {
		t.Fatalf("after Delete of a queued entry: %v", ids)
	}
}

func idsOf(es []history.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}
