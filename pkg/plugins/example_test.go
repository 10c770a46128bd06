package plugins_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/chatserver/chatserver/pkg/pipeline"
	_ "github.com/chatserver/chatserver/pkg/plugins" // registers the built-in plugins
)

// printer is a Publisher that prints what a room would receive.
type printer struct{}

func (printer) Publish(_ context.Context, p pipeline.Publication) error {
	var env pipeline.Envelope
	if err := json.Unmarshal(p.Frame, &env); err != nil {
		return err
	}
	fmt.Printf("to %s (keep %v): %s %s: %s\n", p.Room, p.Keep, env.Type, env.Username, env.Body)
	return nil
}

// conn is a connection as a server would provide it, reduced to what the
// example needs.
type conn struct {
	name  string
	state map[any]any
}

func (c *conn) ID() int64                    { return 7 }
func (c *conn) Room() string                 { return "lobby" }
func (c *conn) Username() string             { return c.name }
func (c *conn) SetUsername(name string)      { c.name = name }
func (c *conn) Cookie(string) (string, bool) { return "", false }
func (c *conn) Query(string) string          { return "" }
func (c *conn) RemoteAddr() string           { return "192.0.2.1:50000" }
func (c *conn) Send(frame []byte) error      { fmt.Printf("to sender: %s\n", frame); return nil }
func (c *conn) Value(key any) any            { return c.state[key] }
func (c *conn) SetValue(key, value any)      { c.state[key] = value }

func Example() {
	cfg := pipeline.Config{pipeline.Message: []pipeline.Step{
		{Use: "username", With: map[string]any{"allow_rename": true}},
		{Use: "validate", With: map[string]any{"max_length": 100}},
		{Use: "ratelimit", With: map[string]any{"rate": 1, "burst": 3}},
		{Use: "broadcast"},
	}}
	p, err := pipeline.Build(cfg, pipeline.Deps{Publisher: printer{}}, pipeline.BuildOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()

	c := &conn{state: map[any]any{}}
	for _, in := range []pipeline.Inbound{
		{Body: "  hello\x00 "},               // cleaned; the sender has no name yet: a guest
		{Body: "hi", Username: ptr("alice")}, // renamed
		{Body: "   "},                        // rejected
	} {
		ev := &pipeline.Event{Kind: pipeline.Message, Sender: c, In: in}
		if err := p.Run(context.Background(), ev); err != nil {
			e := pipeline.AsError(err)
			fmt.Printf("rejected: %s (%s)\n", e.Code, e.Reason)
		}
	}
	// Output:
	// to lobby (keep false): message 游客7: hello
	// to lobby (keep false): message alice: hi
	// rejected: empty (body is empty)
}

func ptr(s string) *string { return &s }
