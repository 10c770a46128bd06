package plugins

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func init() {
	pipeline.Register(pipeline.NewSpec("history",
		"appends to the room's history in the configured store",
		DefaultHistoryOptions,
		func(o *HistoryOptions, deps pipeline.Deps) (pipeline.Plugin, error) {
			return NewHistory(*o, deps.History)
		}))
}

// HistoryOptions configure the history plugin.
type HistoryOptions struct {
	// Kinds are the envelope types kept, when the step is in their pipeline:
	// "message", "online" (join), "offline" (leave) or a custom kind's name
	// (a list, or one comma-separated string). Empty, the default: the
	// events of whichever message or custom-kind pipeline the step is in are
	// kept, presence never — as in the seed, whose history held only
	// messages; a `history` step in a `typing` pipeline keeps typing events.
	Kinds []string `mapstructure:"kinds"`
}

// DefaultHistoryOptions returns the options a step without `with:` gets.
func DefaultHistoryOptions() *HistoryOptions {
	return &HistoryOptions{}
}

// Validate rejects kinds that no event can have, which would otherwise
// silently keep nothing.
func (o *HistoryOptions) Validate() error {
	for _, k := range o.Kinds {
		switch k {
		case pipeline.TypeMessage, pipeline.TypeOnline, pipeline.TypeOffline:
		default:
			if err := pipeline.CheckKind(pipeline.Kind(k)); err != nil || !pipeline.Kind(k).Custom() {
				return fmt.Errorf("kinds: unknown kind %q (known: message, online, offline or a custom kind)", k)
			}
		}
	}
	return nil
}

// History is the history plugin. It asks for the event to be kept (ev.Keep)
// and lets a later broadcast step append it together with the fan-out, so that
// history and what members saw are in one order (see pipeline.Publisher). Only
// when no broadcast step published the event does it append the event itself,
// after the rest of the pipeline accepted it.
type History struct {
	types []string // envelope types kept; nil: every type but online and offline
	w     pipeline.HistoryWriter
}

// NewHistory returns a history plugin appending to w. It validates opts; w
// must not be nil.
func NewHistory(opts HistoryOptions, w pipeline.HistoryWriter) (*History, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if w == nil {
		return nil, errors.New("the server provides no history store")
	}
	return &History{types: slices.Clone(opts.Kinds), w: w}, nil
}

// keeps reports whether events of kind are kept.
func (h *History) keeps(kind pipeline.Kind) bool {
	if h.types == nil {
		return kind != pipeline.Join && kind != pipeline.Leave
	}
	return slices.Contains(h.types, kind.EnvelopeType())
}

// Wrap implements pipeline.Plugin.
func (h *History) Wrap(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(ctx context.Context, ev *pipeline.Event) error {
		if !h.keeps(ev.Kind) || ev.Envelope.To != "" { // direct messages are never kept
			return next.Handle(ctx, ev)
		}
		ev.Keep = true
		if err := next.Handle(ctx, ev); err != nil {
			return err
		}
		if ev.Published || !ev.Completed() {
			return nil // kept by the broadcast, or dropped by a later step
		}
		// Nothing after us published the event: keep it ourselves, complete
		// (with id and time) so ?since= and history dump can use it.
		stamp(ev)
		frame, err := ev.Frame()
		if err != nil {
			return fmt.Errorf("history: encoding envelope: %w", err)
		}
		if err := h.w.Append(ctx, ev.Envelope.Room, ev.Envelope.ID, frame); err != nil {
			return fmt.Errorf("history: appending to room %q: %w", ev.Envelope.Room, err)
		}
		return nil
	})
}

var _ pipeline.Plugin = (*History)(nil)
