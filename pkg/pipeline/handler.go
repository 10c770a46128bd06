package pipeline

import (
	"context"
	"fmt"
	"runtime/debug"
)

// Handler handles an event. Returning an error stops the event: an *Error is
// shown to the sender, any other error is logged and shown as `internal`.
type Handler interface {
	Handle(ctx context.Context, ev *Event) error
}

// HandlerFunc adapts a function to Handler, as http.HandlerFunc does.
type HandlerFunc func(ctx context.Context, ev *Event) error

// Handle calls f(ctx, ev).
func (f HandlerFunc) Handle(ctx context.Context, ev *Event) error { return f(ctx, ev) }

// Plugin is one step of a pipeline: a middleware over the event. Wrap returns a
// handler that may change ev and call next, return an error to reject the event,
// reply to the sender (ev.Reply), skip next to drop the event, or act after next
// returned. Wrap is called once per pipeline build; the handler it returns is
// called concurrently for events of different connections.
//
// A plugin that holds resources also implements io.Closer; Close is called when
// the pipelines it belongs to are replaced or the server stops.
type Plugin interface {
	Wrap(next Handler) Handler
}

// PluginFunc adapts a middleware function to Plugin, for plugins without state.
type PluginFunc func(next Handler) Handler

// Wrap calls f(next).
func (f PluginFunc) Wrap(next Handler) Handler { return f(next) }

// end is the handler after the last step: the event went through.
var end = HandlerFunc(func(_ context.Context, ev *Event) error {
	ev.completed = true
	return nil
})

// PanicError is returned in place of a panic inside a pipeline: a panicking
// plugin costs the one event, never the server.
type PanicError struct {
	Step  string
	Value any
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("pipeline: step %q panicked: %v", e.Step, e.Value)
}

// recoverStep turns a panic in step into a *PanicError. A panic further down
// the chain was already turned into an error by that step's own wrapper.
func recoverStep(step string, h Handler) Handler {
	return HandlerFunc(func(ctx context.Context, ev *Event) (err error) {
		defer func() {
			if v := recover(); v != nil {
				err = &PanicError{Step: step, Value: v, Stack: debug.Stack()}
			}
		}()
		return h.Handle(ctx, ev)
	})
}
