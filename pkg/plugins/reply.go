package plugins

import (
	"html/template"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// SystemName is the username of the replies that plugins (commands, webhook)
// send to the sender alone. The wire protocol has no reply type, so a reply is
// a `message` envelope from "system" with client_id 0 — no connection has id
// 0 — which clients show like any message and never mistake for a member's.
const SystemName = "system"

// replier sends system replies, rendered with message.html when the server
// has templates so that the chat page, which shows a message's html, shows
// them too.
type replier struct {
	tmpl *template.Template
}

func newReplier(set *template.Template) *replier {
	r := &replier{}
	if set == nil {
		return r
	}
	// Executing freezes a template set; run a private copy (see NewRenderHTML).
	if c, err := set.Clone(); err == nil {
		set = c
	}
	r.tmpl = set.Lookup("message.html")
	return r
}

// reply sends body to ev's sender alone as a system message.
func (r *replier) reply(ev *pipeline.Event, body string) error {
	env := pipeline.Envelope{
		ID:       uuid.NewString(),
		Type:     pipeline.TypeMessage,
		Room:     ev.Envelope.Room,
		Username: SystemName,
		Body:     body,
	}
	if env.Room == "" && ev.Sender != nil {
		env.Room = ev.Sender.Room()
	}
	env.Stamp(time.Now())
	if r.tmpl != nil {
		var b strings.Builder
		if err := r.tmpl.Execute(&b, &env); err == nil {
			env.HTML = b.String()
		}
	}
	return ev.Reply(env)
}
