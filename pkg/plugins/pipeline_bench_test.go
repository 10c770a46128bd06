package plugins_test

import (
	"context"
	"html/template"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/chatserver/chatserver"
	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/metrics"
	"github.com/chatserver/chatserver/pkg/pipeline"
	_ "github.com/chatserver/chatserver/pkg/plugins"
)

// BenchmarkDefaultMessagePipeline runs one message event through the default
// message pipeline (config/chatserver.yaml: username, validate, ratelimit,
// render_html, history, broadcast) built by pipeline.Build with the real
// plugins and templates, a publisher that does nothing, and the server's
// per-event work before the pipeline (id, timestamp; ids from uuid's pool,
// as the server draws them). What it measures is the
// cost of an event before network I/O: fan-out is BenchmarkHubDeliver's.
// The rate limit is raised so that the loop is never refused.
func BenchmarkDefaultMessagePipeline(b *testing.B) {
	uuid.EnableRandPool() // as the chatserver binary's main does
	cfg, err := config.Load("", nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		opts pipeline.BuildOptions
	}{
		{"bare", pipeline.BuildOptions{}},
		{"metrics", pipeline.BuildOptions{Observer: metrics.New()}},
		// as the server builds it: its observer and plugins.timeout
		{"server", pipeline.BuildOptions{Observer: metrics.New(), EventTimeout: cfg.Plugins.StepTimeout()}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := buildDefault(b, bc.opts)
			s := &benchSender{id: 7, room: "lobby", values: map[any]any{}}
			ctx := context.Background()
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				ev := &pipeline.Event{Kind: pipeline.Message, In: pipeline.Inbound{Body: "hello, this is a forty byte message body"}, Sender: s}
				ev.Envelope = pipeline.Envelope{ID: uuid.NewString(), Type: pipeline.TypeMessage, Room: s.room, ClientID: s.id, Username: s.name}
				ev.Envelope.Stamp(time.Now())
				if err := p.Run(ctx, ev); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

func buildDefault(b *testing.B, opts pipeline.BuildOptions) *pipeline.Pipelines {
	cfg, err := config.Load("", nil)
	if err != nil {
		b.Fatal(err)
	}
	pc := cfg.Pipelines
	for i, st := range pc[pipeline.Message] {
		if st.Use == "ratelimit" {
			pc[pipeline.Message][i].With = map[string]any{"rate": 1e9, "burst": 1e9}
		}
	}
	tmpl, err := template.ParseFS(chatserver.Templates, "templates/*.html")
	if err != nil {
		b.Fatal(err)
	}
	p, err := pipeline.Build(pc, pipeline.Deps{Publisher: nopPublisher{}, History: nopPublisher{}, Templates: tmpl},
		opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// cpuTime is the CPU time this process has used. On a shared machine ns/op
// (wall time) includes waiting for the CPU; cpu-ns/op does not.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, pipeline.Publication) error  { return nil }
func (nopPublisher) Append(context.Context, string, string, []byte) error { return nil }

// benchSender is a Sender without the recording of the tests' fake. Like the
// server's client it is used by one event at a time here, so it needs no lock.
type benchSender struct {
	id     int64
	room   string
	name   string
	values map[any]any
}

func (s *benchSender) ID() int64                    { return s.id }
func (s *benchSender) Room() string                 { return s.room }
func (s *benchSender) Username() string             { return s.name }
func (s *benchSender) SetUsername(name string)      { s.name = name }
func (s *benchSender) Cookie(string) (string, bool) { return "", false }
func (s *benchSender) Query(string) string          { return "" }
func (s *benchSender) RemoteAddr() string           { return "127.0.0.1:50000" }
func (s *benchSender) Send([]byte) error            { return nil }
func (s *benchSender) Value(key any) any            { return s.values[key] }
func (s *benchSender) SetValue(key, value any)      { s.values[key] = value }
func (s *benchSender) String() string               { return s.name }

var _ pipeline.Sender = (*benchSender)(nil)
