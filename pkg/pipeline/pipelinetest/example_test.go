package pipelinetest_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/chatserver/chatserver/pkg/pipeline"
	"github.com/chatserver/chatserver/pkg/pipeline/pipelinetest"
	_ "github.com/chatserver/chatserver/pkg/plugins" // the built-in plugins, beside ours
)

// ShoutOptions are the example plugin's options: `with: {mark: "!"}`.
type ShoutOptions struct {
	// Mark is appended to every message. Default "!".
	Mark string `mapstructure:"mark"`
}

func init() {
	pipeline.Register(pipeline.NewSpec("kit_shout", "upper-cases messages",
		func() *ShoutOptions { return &ShoutOptions{Mark: "!"} },
		func(o *ShoutOptions, _ pipeline.Deps) (pipeline.Plugin, error) {
			return pipeline.PluginFunc(func(next pipeline.Handler) pipeline.Handler {
				return pipeline.HandlerFunc(func(ctx context.Context, ev *pipeline.Event) error {
					if strings.HasPrefix(ev.Envelope.Body, "psst") {
						return pipeline.Reject(pipeline.CodeRejected, "no whispering")
					}
					ev.SetBody(strings.ToUpper(ev.Envelope.Body) + o.Mark)
					return next.Handle(ctx, ev)
				})
			}), nil
		}))
}

// A plugin tested beside the built-ins it runs with in a real config:
// what it broadcast, rendered, kept and refused.
func Example() {
	room, err := pipelinetest.Build(`
message:
  - use: username
  - use: validate
  - use: kit_shout
    with: { mark: "!!" }
  - use: render_html
  - use: history
  - use: broadcast
`)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer room.Close()

	alice := room.Member("", pipelinetest.NameCookie("alice"))
	alice.Join()
	got := alice.Say("hello <b>you</b>")
	fmt.Println(got.Broadcast().Username, got.Broadcast().Body)
	fmt.Println(strings.Contains(got.Broadcast().HTML, "&lt;B&gt;"), len(got.Kept))

	refused := alice.Say("psst, over here")
	fmt.Println(refused.Err.Code, refused.Err.Reason, len(refused.Published))
	// Output:
	// alice HELLO <B>YOU</B>!!
	// true 1
	// rejected no whispering 0
}
