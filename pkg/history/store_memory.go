package history

import (
	"context"
	"sync"
)

// Memory is an in-process Store: a ring of size entries per room. It is the
// default store and needs no setup; its history ends with the process.
type Memory struct {
	size  int
	mu    sync.RWMutex
	rooms map[string]*ring
}

// NewMemory returns a store keeping the last size entries per room (size >= 1).
func NewMemory(size int) *Memory {
	if size < 1 {
		size = 1
	}
	return &Memory{size: size, rooms: map[string]*ring{}}
}

// ring is a fixed-size circular buffer; start is the oldest entry.
type ring struct {
	buf   []Entry
	start int
	n     int
}

func (r *ring) push(e Entry) {
	if r.n < len(r.buf) {
		r.buf[(r.start+r.n)%len(r.buf)] = e
		r.n++
		return
	}
	r.buf[r.start] = e
	r.start = (r.start + 1) % len(r.buf)
}

// Append implements Store.
func (m *Memory) Append(_ context.Context, room, id string, frame []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.rooms[room]
	if r == nil {
		r = &ring{buf: make([]Entry, m.size)}
		m.rooms[room] = r
	}
	r.push(Entry{ID: id, Frame: frame})
	return nil
}

// Recent implements Store.
func (m *Memory) Recent(_ context.Context, room string, limit int) ([]Entry, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	r := m.rooms[room]
	if r == nil {
		return nil, nil
	}
	n := r.n
	if limit > 0 && limit < n {
		n = limit
	}
	out := make([]Entry, n)
	first := r.start + r.n - n
	for i := range out {
		out[i] = r.buf[(first+i)%len(r.buf)]
	}
	return out, nil
}

// Clear implements Store.
func (m *Memory) Clear(_ context.Context, room string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.rooms, room)
	return nil
}

// Delete implements Store: the ring is rebuilt without the entry, oldest
// first, so the next append goes after the newest as before.
func (m *Memory) Delete(_ context.Context, room, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.rooms[room]
	if r == nil {
		return ErrNotFound
	}
	for i := 0; i < r.n; i++ {
		if r.buf[(r.start+i)%len(r.buf)].ID != id {
			continue
		}
		kept := make([]Entry, len(r.buf))
		n := 0
		for j := 0; j < r.n; j++ {
			if j != i {
				kept[n] = r.buf[(r.start+j)%len(r.buf)]
				n++
			}
		}
		r.buf, r.start, r.n = kept, 0, n
		return nil
	}
	return ErrNotFound
}

// Ping implements Store; memory is always reachable.
func (m *Memory) Ping(context.Context) error { return nil }

// Close implements Store.
func (m *Memory) Close() error { return nil }

var _ Store = (*Memory)(nil)
