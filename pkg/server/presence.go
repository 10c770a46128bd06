package server

import (
	"context"
	"fmt"
	"slices"

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
// who is there. Rooms at or under the limit get every online and offline.

// quietIfCrowded sets ev.Quiet when ev is a presence event of kind in a
// room over the limit: its broadcast is then cut short (see
// presencePublisher).
func (s *Server) quietIfCrowded(ev *pipeline.Event, c *client, kind pipeline.Kind) {
	limit := s.cfg.WebSocket.PresenceLimit
	if limit <= 0 || (kind != pipeline.Join && kind != pipeline.Leave) {
		return
	}
	n := s.hub.size(c.room) // the joiner is in already
	if kind == pipeline.Leave {
		n++ // the leaver has left already: count the room it left
	}
	ev.Quiet = n > limit
}

// presencePublisher is the Publisher plugins get: the broker, which it asks
// for a direct delivery when the publication has a recipient, and which it
// skips for the presence events of crowded rooms (Publication.Quiet).
type presencePublisher struct {
	broker.Broker
	s *Server
}

// Publish implements pipeline.Publisher.
func (p presencePublisher) Publish(ctx context.Context, pub pipeline.Publication) error {
	if c, ok := pub.Sender.(*client); ok && pub.Kind == pipeline.Join {
		if err := p.s.admitJoin(ctx, c); err != nil { // a banned joiner (bans.go)
			return err
		}
	}
	switch {
	case pub.To != "":
		return p.s.publishDirect(ctx, pub)
	case !pub.Quiet:
		return p.Broker.Publish(ctx, pub.Room, pub.ID, pub.Frame, pub.Keep)
	}
	p.s.metrics.PresenceSuppressed.Inc()
	if pub.Keep { // history keeps presence events: keep it, without the fan-out
		if err := p.s.store.Append(ctx, pub.Room, pub.ID, pub.Frame); err != nil {
			return err
		}
	}
	if pub.Sender != nil {
		_ = pub.Sender.Send(pub.Frame)
	}
	return nil
}

// publishDirect sends a direct message, after checking that a member of
// that name is in the room (on any node).
func (s *Server) publishDirect(ctx context.Context, pub pipeline.Publication) error {
	members, err := s.members(ctx, pub.Room)
	if err != nil && len(members) == 0 {
		return fmt.Errorf("listing the members of room %q: %w", pub.Room, err)
	}
	if !slices.ContainsFunc(members, func(m pipeline.Member) bool { return m.Username == pub.To }) {
		return pipeline.Reject(pipeline.CodeNoRecipient, "nobody named %q is in room %q", pub.To, pub.Room)
	}
	return s.broker.PublishDirect(ctx, pub.Room, pub.Frame, pub.To, pub.From)
}

var _ pipeline.Publisher = presencePublisher{}
