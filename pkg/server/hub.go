package server

import (
	"bytes"
	"sync"

	"github.com/chatserver/chatserver/pkg/history"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

// hub knows which local clients are in which room and hands frames to them. It
// never blocks on a client: delivery only appends to each client's bounded
// queue, and a client whose queue is full is cut off (see client.enqueue).
type hub struct {
	mu    sync.RWMutex
	rooms map[string]*room

	// opened and closed are called (outside the hub's lock order, but under the
	// hub lock) when a room gets its first or loses its last local member, so
	// a clustered broker can subscribe to just the rooms this node serves.
	opened, closed func(room string)
	// roomsChanged is called (under the hub lock) with the number of rooms
	// after one opened or closed.
	roomsChanged func(n int)
	// delivered counts frames queued to clients.
	delivered func(n int)
}

// room is the local members of one room. A slice, not a map: delivery walks
// it for every message, and a slice walk is several times faster.
type room struct {
	mu      sync.RWMutex
	members []*client
}

func newHub() *hub {
	return &hub{rooms: map[string]*room{}}
}

// join adds c to its room.
func (h *hub) join(c *client) {
	h.mu.Lock()
	r := h.rooms[c.room]
	if r == nil {
		r = &room{}
		h.rooms[c.room] = r
		if h.opened != nil {
			h.opened(c.room)
		}
		if h.roomsChanged != nil {
			h.roomsChanged(len(h.rooms))
		}
	}
	r.mu.Lock()
	c.slot = len(r.members)
	r.members = append(r.members, c)
	r.mu.Unlock()
	h.mu.Unlock()
}

// leave removes c from its room; the last member out removes the room.
func (h *hub) leave(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[c.room]
	if r == nil {
		return
	}
	r.mu.Lock()
	if c.slot >= 0 && c.slot < len(r.members) && r.members[c.slot] == c {
		last := len(r.members) - 1
		r.members[c.slot] = r.members[last]
		r.members[c.slot].slot = c.slot
		r.members[last] = nil
		r.members = r.members[:last]
		c.slot = -1
	}
	empty := len(r.members) == 0
	r.mu.Unlock()
	if empty {
		delete(h.rooms, c.room)
		if h.closed != nil {
			h.closed(c.room)
		}
		if h.roomsChanged != nil {
			h.roomsChanged(len(h.rooms))
		}
	}
}

// deliver queues frame to every local member of roomName. The frame is
// encoded once however many members there are (see outFrame): delivery to a
// member is an append to its queue and, at most, a wake-up of its writer.
func (h *hub) deliver(roomName, id string, frame []byte, kept bool) {
	h.mu.RLock()
	r := h.rooms[roomName]
	h.mu.RUnlock()
	if r == nil {
		return
	}
	q := queued{id: id, f: newOutFrame(frame), kept: kept, presence: isPresence(frame)}
	r.mu.RLock()
	n := len(r.members)
	for _, c := range r.members {
		_ = c.enqueue(q) // a full queue cuts that client off; nobody else waits
	}
	r.mu.RUnlock()
	if h.delivered != nil {
		h.delivered(n)
	}
}

// deliverDirect queues a direct message to the local members of roomName
// named to and to the connection with id from (the sender), and to no one
// else. It implements broker.DirectFunc.
func (h *hub) deliverDirect(roomName string, frame []byte, to string, from int64) {
	h.mu.RLock()
	r := h.rooms[roomName]
	h.mu.RUnlock()
	if r == nil {
		return
	}
	var q queued
	n := 0
	r.mu.RLock()
	for _, c := range r.members {
		if c.id != from && c.Username() != to {
			continue
		}
		if q.f == nil {
			q = queued{id: history.IDOf(frame), f: newOutFrame(frame)}
		}
		_ = c.enqueue(q)
		n++
	}
	r.mu.RUnlock()
	if h.delivered != nil && n > 0 {
		h.delivered(n)
	}
}

// members lists the local members of roomName.
func (h *hub) members(roomName string) []pipeline.Member {
	h.mu.RLock()
	r := h.rooms[roomName]
	h.mu.RUnlock()
	if r == nil {
		return []pipeline.Member{}
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]pipeline.Member, 0, len(r.members))
	for _, c := range r.members {
		// A client whose join was not accepted yet (it may be refused) is
		// not a member to others.
		if c.present.Load() {
			out = append(out, pipeline.Member{ClientID: c.id, Username: c.Username()})
		}
	}
	return out
}

// size returns the number of local members of roomName.
func (h *hub) size(roomName string) int {
	h.mu.RLock()
	r := h.rooms[roomName]
	h.mu.RUnlock()
	if r == nil {
		return 0
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.members)
}

// count returns the number of rooms with local members.
func (h *hub) count() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.rooms)
}

// closeAll asks every member's writer to close with code and text, after
// what is queued.
func (h *hub) closeAll(code int, text string) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, r := range h.rooms {
		r.mu.RLock()
		for _, c := range r.members {
			c.close(code, text)
		}
		r.mu.RUnlock()
	}
}

// cutAll closes the network connection of every member, without a close
// frame: shutdown's last resort for clients that did not leave in time. Their
// reader and writer goroutines then end on their own. It returns how many.
func (h *hub) cutAll() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 0
	for _, r := range h.rooms {
		r.mu.RLock()
		for _, c := range r.members {
			c.mu.Lock()
			bc := c.bc // nil while its handshake is still being written
			c.mu.Unlock()
			if bc != nil {
				_ = bc.Close()
				n++
			}
		}
		r.mu.RUnlock()
	}
	return n
}

// isPresence reports whether frame is an online or offline envelope. Inside a
// JSON string a quote is escaped, so the first `"type":"` is the envelope's
// own type field: AppendJSON writes type second, before data (the one field
// that holds an object, which may have a "type" key of its own).
func isPresence(frame []byte) bool {
	i := bytes.Index(frame, []byte(`"type":"`))
	if i < 0 {
		return false
	}
	rest := frame[i+len(`"type":"`):]
	return bytes.HasPrefix(rest, []byte(`online"`)) || bytes.HasPrefix(rest, []byte(`offline"`))
}
