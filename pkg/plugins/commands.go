package plugins

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func init() {
	pipeline.Register(pipeline.NewSpec("commands",
		"slash commands: /nick NAME, /me ACTION, /who (replies go to the sender alone)",
		DefaultCommandsOptions,
		func(o *CommandsOptions, deps pipeline.Deps) (pipeline.Plugin, error) { return NewCommands(*o, deps) }))
}

// CommandsOptions configure the commands plugin.
type CommandsOptions struct {
	// MaxNameLength bounds a /nick name, in runes, cleaned as the username
	// plugin cleans names. Default 32.
	MaxNameLength int `mapstructure:"max_name_length"`
}

// DefaultCommandsOptions returns the options a step without `with:` gets.
func DefaultCommandsOptions() *CommandsOptions {
	return &CommandsOptions{MaxNameLength: 32}
}

// Validate rejects a name length no name could meet.
func (o *CommandsOptions) Validate() error {
	if o.MaxNameLength < 1 {
		return fmt.Errorf("max_name_length must be at least 1, got %d", o.MaxNameLength)
	}
	return nil
}

// commandList is what an unknown command is told.
const commandList = "/nick NAME, /me ACTION, /who"

// Commands is the commands plugin. It acts on message events whose body
// starts with "/":
//
//   - /nick NAME renames the sender and replies a confirmation to the sender
//     alone; the command itself is not broadcast. SystemName (any case) is
//     rejected as a reserved name.
//   - /me ACTION turns the message into "* NAME ACTION" and lets it go on
//     (render, history, broadcast).
//   - /who replies the room's member list to the sender alone.
//   - //text sends "/text" as an ordinary message.
//   - any other /x is rejected (`error rejected`) with the list of commands.
//
// Replies are `message` envelopes from SystemName with client_id 0. Put the
// step after username and validate (so the body is clean and the sender
// named) and before render_html.
type Commands struct {
	max     int
	members pipeline.Members
	replier *replier
}

// NewCommands returns a commands plugin. It validates opts; deps.Members must
// not be nil (for /who).
func NewCommands(opts CommandsOptions, deps pipeline.Deps) (*Commands, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if deps.Members == nil {
		return nil, errors.New("the server provides no member list (needed by /who)")
	}
	return &Commands{max: opts.MaxNameLength, members: deps.Members, replier: newReplier(deps.Templates)}, nil
}

// Wrap implements pipeline.Plugin.
func (c *Commands) Wrap(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(ctx context.Context, ev *pipeline.Event) error {
		if ev.Kind != pipeline.Message {
			return next.Handle(ctx, ev)
		}
		body := strings.TrimSpace(ev.In.Body)
		if !strings.HasPrefix(body, "/") {
			return next.Handle(ctx, ev)
		}
		if strings.HasPrefix(body, "//") {
			ev.SetBody(body[1:])
			return next.Handle(ctx, ev)
		}
		name, arg, _ := strings.Cut(body[1:], " ")
		arg = strings.TrimSpace(arg)
		switch name {
		case "nick":
			return c.nick(ev, arg)
		case "me":
			if arg == "" {
				return pipeline.Reject(pipeline.CodeRejected, "usage: /me ACTION")
			}
			ev.SetBody("* " + c.senderName(ev) + " " + arg)
			return next.Handle(ctx, ev)
		case "who":
			return c.who(ctx, ev)
		}
		return pipeline.Reject(pipeline.CodeRejected, "unknown command /%s (commands: %s)", CleanName(name, 32), commandList)
	})
}

func (c *Commands) nick(ev *pipeline.Event, arg string) error {
	name := CleanName(arg, c.max)
	if name == "" {
		return pipeline.Reject(pipeline.CodeRejected, "usage: /nick NAME")
	}
	if ReservedName(name) {
		return pipeline.Reject(pipeline.CodeRejected, "reserved name")
	}
	if ev.Sender == nil {
		return errors.New("commands: event has no sender")
	}
	// A name proven by a signed cookie or a JWT (the username plugin's
	// signed and jwt modes) is not the client's to change.
	if _, proven := ev.Sender.Value(verifiedKey{}).(string); proven {
		return pipeline.Reject(pipeline.CodeRejected, "your name is set by your login and cannot be changed here")
	}
	ev.Sender.SetUsername(name)
	return c.replier.reply(ev, "you are now "+name)
}

func (c *Commands) who(ctx context.Context, ev *pipeline.Event) error {
	room := ev.Envelope.Room
	if room == "" && ev.Sender != nil {
		room = ev.Sender.Room()
	}
	ms, err := c.members.Members(ctx, room)
	if err != nil {
		return fmt.Errorf("commands: listing members of %q: %w", room, err)
	}
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Username
	}
	return c.replier.reply(ev, fmt.Sprintf("%d in %s: %s", len(ms), room, strings.Join(names, ", ")))
}

func (c *Commands) senderName(ev *pipeline.Event) string {
	if ev.Envelope.Username != "" {
		return ev.Envelope.Username
	}
	if ev.Sender != nil {
		return ev.Sender.Username()
	}
	return ""
}

var _ pipeline.Plugin = (*Commands)(nil)
