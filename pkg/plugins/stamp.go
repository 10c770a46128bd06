package plugins

import (
	"time"

	"github.com/google/uuid"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// stamp fills in every envelope field the wire protocol requires and that is
// still empty, so that what reaches history and the room is complete even when
// the server did not stamp the event before running the pipeline. Fields
// already set are left alone: the server's values win.
func stamp(ev *pipeline.Event) {
	e := &ev.Envelope
	if e.ID == "" {
		e.ID = uuid.NewString()
	}
	if e.Type == "" {
		e.Type = ev.Kind.EnvelopeType() // the kind is always set; the envelope's type may not be yet
	}
	if s := ev.Sender; s != nil {
		if e.Room == "" {
			e.Room = s.Room()
		}
		if e.ClientID == 0 {
			e.ClientID = s.ID()
		}
		if e.Username == "" {
			e.Username = s.Username()
		}
	}
	switch {
	case e.TS == 0:
		e.Stamp(time.Now())
	case e.Datetime == "":
		e.Datetime = time.UnixMilli(e.TS).Format(pipeline.DatetimeLayout)
	}
	if e.Type == pipeline.TypeOnline || e.Type == pipeline.TypeOffline {
		// Presence envelopes carry no body or html.
		e.Body, e.HTML = "", ""
	}
}
