package server

import (
	"context"
	"time"

	"github.com/chatserver/chatserver/pkg/broker"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

// frameOutcome is what running one inbound frame came to.
type frameOutcome struct {
	// ev is the event run; nil when the frame was refused before running
	// or was a resend.
	ev *pipeline.Event
	// id is the id of the envelope the frame produced ("" for none): the
	// ack's. For a resend it is the first copy's.
	id string
	// resent is set when the frame's ref was accepted before: not run again.
	resent bool
	// err refuses the frame: nothing of it was published.
	err error
	// late is what a step returned after the event was published: members
	// have it, so it counts as accepted (its ref is remembered and acked),
	// and the failure is only logged and, without a ref, told.
	late error
}

// runFrame runs one inbound frame — a member's, or a backend's through the
// server API — through the pipeline of its kind (run), with the rules of
// refs: a ref accepted before (from refName in room, within ref_ttl) is not
// run again; a refused frame's ref is forgotten; a published one's is
// remembered, even when a step after the publish failed, so that a resend
// can never deliver it twice.
func (s *Server) runFrame(ctx context.Context, room, refName string, in pipeline.Inbound,
	run func(pipeline.Kind) (*pipeline.Event, error)) frameOutcome {
	kind := in.Kind()
	if err := s.pipelines.Load().Accepts(kind); err != nil {
		s.metrics.EventsIn.WithLabelValues(string(pipeline.Message), "rejected").Inc()
		return frameOutcome{err: err}
	}
	var key string
	if in.Ref != "" {
		key = s.refs.Key(room, refName, in.Ref)
		id, st := s.claimRef(ctx, key)
		switch st {
		case broker.RefAccepted:
			s.metrics.RefResends.Inc()
			return frameOutcome{id: id, resent: true}
		case broker.RefPending:
			return frameOutcome{err: pipeline.Reject(pipeline.CodeRejected,
				"a frame with ref %q is still being handled; resend it later", in.Ref)}
		}
	}
	ev, err := run(kind)
	if err != nil && !ev.Published {
		if key != "" {
			s.refs.Release(ctx, key)
		}
		return frameOutcome{ev: ev, err: err}
	}
	o := frameOutcome{ev: ev, id: producedID(ev), late: err}
	if err != nil {
		s.log.Warn("a step failed after the event was published; it counts as accepted",
			"room", room, "kind", string(kind), "id", ev.Envelope.ID, "err", err)
	}
	if key != "" {
		s.refs.Accept(ctx, key, o.id)
	}
	return o
}

// producedID is the id of the envelope an accepted event produced: published
// (or kept by a history step without a broadcast). An event that produced
// none (a command answered to the sender alone) has "".
func producedID(ev *pipeline.Event) string {
	if ev.Published || ev.Keep && ev.Completed() {
		return ev.Envelope.ID
	}
	return ""
}

// claimRef claims key; while another copy of the frame is running (a resend
// racing the first copy, on any node) it waits for that copy's outcome —
// accepted: this one is its resend; refused: this one runs — for as long as
// a pipeline may take (RefPending only past that, when the first copy's
// node died mid-frame).
func (s *Server) claimRef(ctx context.Context, key string) (string, broker.RefState) {
	deadline := time.Now().Add(broker.PendingTTL(s.cfg.Plugins.Timeout, s.cfg.WebSocket.RefTTL))
	for {
		id, st := s.refs.Claim(ctx, key)
		if st != broker.RefPending || time.Now().After(deadline) || ctx.Err() != nil {
			return id, st
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}
