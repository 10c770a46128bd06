package server

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// Post runs a frame from a trusted backend (the server API's caller) through
// room's pipeline for the frame's kind, as a member named username would send
// it: the same steps run (validate, filter, render_html, history, broadcast,
// a direct message's `to`), except that the name is taken as given and
// per-client rate limits do not apply (see pipeline.Trusted). The room needs
// no members: a kept message lands in history.
//
// It returns the envelope exactly as it was published (or as the pipeline
// left it, if no step published it). A frame with a ref that was accepted
// before (same username, same room, within websocket.ref_ttl) is not run
// again: Post returns its ack frame, {"type":"ack","ref":…,"id":…}. A
// refusal is a *pipeline.Error (see pipeline.AsError).
func (s *Server) Post(ctx context.Context, room, username string, in pipeline.Inbound) ([]byte, error) {
	if !ValidRoom(room) {
		return nil, pipeline.Reject(pipeline.CodeInvalidJSON, "invalid room name: want 1-64 characters of A-Z a-z 0-9 _ . -")
	}
	if username == "" {
		return nil, pipeline.Reject(pipeline.CodeInvalidJSON, "username is required")
	}
	if err := pipeline.CheckData(in.Data); err != nil {
		return nil, pipeline.Reject(pipeline.CodeInvalidJSON, "field data: %v", err)
	}
	if in.Ref != "" && !validRef(in.Ref) {
		return nil, pipeline.Reject(pipeline.CodeInvalidJSON, "field ref must be 1-%d printable ASCII characters", maxRefLen)
	}
	o := s.runFrame(ctx, room, username, in, func(kind pipeline.Kind) (*pipeline.Event, error) {
		ev := pipeline.NewEvent(kind, newAPISender(room, username), in)
		err := s.pipelines.Load().Run(ctx, ev)
		outcome := "ok"
		if err != nil {
			outcome = "rejected"
		}
		s.metrics.EventsIn.WithLabelValues(string(kind), outcome).Inc()
		return ev, err
	})
	switch {
	case o.err != nil:
		return nil, o.err
	case o.resent:
		return json.Marshal(pipeline.AckFrame{Type: pipeline.TypeAck, Ref: in.Ref, ID: o.id})
	}
	frame, err := o.ev.Frame()
	if err != nil {
		return nil, fmt.Errorf("encoding the envelope: %w", err)
	}
	return frame, nil
}

// apiSender is the sender of a Post: no connection (client id 0, as the
// server's own replies), a name the server vouches for, and state that lives
// for the one event. What plugins reply to it is dropped: the API's answer
// is the envelope.
type apiSender struct {
	room string
	pipeline.SenderState
}

func newAPISender(room, name string) *apiSender {
	a := &apiSender{room: room}
	a.SetUsername(name)
	return a
}

func (a *apiSender) ID() int64                    { return 0 }
func (a *apiSender) Room() string                 { return a.room }
func (a *apiSender) Cookie(string) (string, bool) { return "", false }
func (a *apiSender) Query(string) string          { return "" }
func (a *apiSender) RemoteAddr() string           { return "" }
func (a *apiSender) Send([]byte) error            { return nil }
func (a *apiSender) Trusted() bool                { return true }

var (
	_ pipeline.Sender  = (*apiSender)(nil)
	_ pipeline.Trusted = (*apiSender)(nil)
)
