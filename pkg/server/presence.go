package server

import (
	"context"

	"github.com/chatserver/chatserver/pkg/broker"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

// Presence in big rooms.
//
// Every online/offline event is one frame per member, so N members joining
// one room cost N²/2 frames: 19,000 joins would be 180 million frames. Rooms
// with more local members than websocket.presence_limit therefore get no
// presence broadcasts: the join and leave pipelines still run (names are
// resolved, plugins see the events), but the publish of the presence event
// itself is cut short — the joiner alone gets its own online frame, so it
// still learns its client_id and name, and /api/rooms/{room}/members says
// who is there. Rooms at or under the limit behave exactly as SPEC §5 says.

// quietKey marks, in an event's context, a presence event not to broadcast.
type quietKey struct{}

// quietPresence is the presence event whose broadcast is suppressed.
type quietPresence struct {
	id     string  // the event's envelope id
	joiner *client // the joining client (nil for leave)
}

// quietIfCrowded returns ctx marked so that the broadcast of the presence
// event id (of kind) is suppressed, when c's room is over the limit.
func (s *Server) quietIfCrowded(ctx context.Context, c *client, kind pipeline.Kind, id string) context.Context {
	limit := s.cfg.WebSocket.PresenceLimit
	if limit <= 0 || kind == pipeline.Message {
		return ctx
	}
	n := s.hub.size(c.room) // the joiner is in already
	if kind == pipeline.Leave {
		n++ // the leaver has left already: count the room it left
	}
	if n <= limit {
		return ctx
	}
	q := &quietPresence{id: id}
	if kind == pipeline.Join {
		q.joiner = c
	}
	return context.WithValue(ctx, quietKey{}, q)
}

// presencePublisher is the Publisher plugins get: the broker, except for the
// presence events of crowded rooms (see quietIfCrowded).
type presencePublisher struct {
	broker.Broker
	s *Server
}

// Publish implements pipeline.Publisher.
func (p presencePublisher) Publish(ctx context.Context, room, id string, frame []byte, keep bool) error {
	if err := p.s.admitJoin(ctx, id); err != nil { // a banned joiner (bans.go)
		return err
	}
	q, _ := ctx.Value(quietKey{}).(*quietPresence)
	if q == nil || q.id != id {
		return p.Broker.Publish(ctx, room, id, frame, keep)
	}
	p.s.metrics.PresenceSuppressed.Inc()
	if keep { // history keeps presence events: keep it, without the fan-out
		if err := p.s.store.Append(ctx, room, id, frame); err != nil {
			return err
		}
	}
	if q.joiner != nil {
		_ = q.joiner.sendFrame(frame)
	}
	return nil
}

var _ pipeline.Publisher = presencePublisher{}
