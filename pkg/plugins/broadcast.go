package plugins

import (
	"context"
	"errors"
	"fmt"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func init() {
	pipeline.Register(pipeline.Spec{
		Name:        "broadcast",
		Description: "fans the event out to every member of the room, on every node",
		New: func(_ any, deps pipeline.Deps) (pipeline.Plugin, error) {
			return NewBroadcast(deps.Publisher)
		},
	})
}

// Broadcast is the broadcast plugin. It completes the envelope (id, type,
// room, client_id, username, datetime, ts) from the event and its sender when
// the server has not, because what it publishes is final: members and history
// get exactly this frame. It publishes before calling the next step, so steps
// after it act on an event that members already have (logging, metrics).
//
// It fans out events of any kind. An envelope with `to` set is a direct
// message: it goes only to the members of that name and the sender, is never
// kept, and is refused with no_recipient when nobody of that name is in the
// room (see pipeline.Publication).
type Broadcast struct {
	pub pipeline.Publisher
}

// NewBroadcast returns a broadcast plugin publishing through pub, which must
// not be nil.
func NewBroadcast(pub pipeline.Publisher) (*Broadcast, error) {
	if pub == nil {
		return nil, errors.New("the server provides no publisher")
	}
	return &Broadcast{pub: pub}, nil
}

// Wrap implements pipeline.Plugin.
func (b *Broadcast) Wrap(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(ctx context.Context, ev *pipeline.Event) error {
		stamp(ev)
		frame, err := ev.Frame()
		if err != nil {
			return fmt.Errorf("broadcast: encoding envelope: %w", err)
		}
		if err := b.pub.Publish(ctx, ev.Publication(frame)); err != nil {
			return fmt.Errorf("broadcast: publishing to room %q: %w", ev.Envelope.Room, err)
		}
		ev.Published = true
		return next.Handle(ctx, ev)
	})
}

var _ pipeline.Plugin = (*Broadcast)(nil)
