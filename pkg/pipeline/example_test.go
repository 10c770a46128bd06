package pipeline_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// ShoutOptions are the options of the example plugin: `with: {mark: "!"}`.
type ShoutOptions struct {
	// Mark is appended to every message. Default "!".
	Mark string `mapstructure:"mark"`
}

// Example registers a plugin, builds a pipeline that uses it — as a YAML
// `pipelines.message: [{use: shout, with: {mark: "!!"}}]` would — and runs
// events through it. In a real plugin package the Register call is in init.
func Example() {
	pipeline.Register(pipeline.NewSpec("shout", "upper-cases messages; rejects whispers",
		func() *ShoutOptions { return &ShoutOptions{Mark: "!"} }, // the defaults; `with:` is decoded onto them
		func(o *ShoutOptions, _ pipeline.Deps) (pipeline.Plugin, error) {
			return pipeline.PluginFunc(func(next pipeline.Handler) pipeline.Handler {
				return pipeline.HandlerFunc(func(ctx context.Context, ev *pipeline.Event) error {
					if strings.HasPrefix(ev.Envelope.Body, "psst") {
						return pipeline.Reject(pipeline.CodeRejected, "no whispering")
					}
					ev.SetBody(strings.ToUpper(ev.Envelope.Body) + o.Mark) // the one way to change a body
					return next.Handle(ctx, ev)                            // the rest of the pipeline
				})
			}), nil
		}))

	cfg := pipeline.Config{pipeline.Message: []pipeline.Step{{Use: "shout", With: map[string]any{"mark": "!!"}}}}
	p, err := pipeline.Build(cfg, pipeline.Deps{}, pipeline.BuildOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()

	for _, body := range []string{"hello", "psst, over here"} {
		ev := &pipeline.Event{Kind: pipeline.Message, Envelope: pipeline.Envelope{Body: body}}
		if err := p.Run(context.Background(), ev); err != nil {
			fmt.Println("error:", pipeline.AsError(err).Code, pipeline.AsError(err).Reason)
			continue
		}
		fmt.Println(ev.Envelope.Body)
	}
	// Output:
	// HELLO!!
	// error: rejected no whispering
}
