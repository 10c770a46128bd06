package server

// closeKicked is the close code of a connection the server API kicked, or
// whose join a ban refused (4001; 4000-4999 are the application's).
const closeKicked = 4001

// kickLocal is the broker's KickFunc: it closes this node's connections of
// username in room.
func (s *Server) kickLocal(room, username string) {
	if n := s.hub.kick(room, username); n > 0 {
		s.log.Info("kicked", "room", room, "connections", n)
	}
}

// kick asks every local connection of username in roomName to close with
// 4001 "kicked", after what is queued for it, and returns how many. It is
// the broker's KickFunc: it never blocks on a client. A connection whose
// join has not resolved its name yet is not matched: a ban, recorded before
// the kick, refuses it when its name is resolved (see admitJoin).
func (h *hub) kick(roomName, username string) int {
	h.mu.RLock()
	r := h.rooms[roomName]
	h.mu.RUnlock()
	if r == nil {
		return 0
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for _, c := range r.members {
		if c.Username() == username {
			c.close(closeKicked, "kicked")
			n++
		}
	}
	return n
}

// roomCounts returns the number of local members of every room that has
// any, as the members route lists them (connections still in their
// handshake are not counted).
func (h *hub) roomCounts() map[string]int {
	h.mu.RLock()
	rooms := make(map[string]*room, len(h.rooms))
	for name, r := range h.rooms {
		rooms[name] = r
	}
	h.mu.RUnlock()
	out := make(map[string]int, len(rooms))
	for name, r := range rooms {
		r.mu.RLock()
		for _, c := range r.members {
			if c.present.Load() { // joined, not joining
				out[name]++
			}
		}
		r.mu.RUnlock()
		if out[name] == 0 {
			delete(out, name)
		}
	}
	return out
}
