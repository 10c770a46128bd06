package server_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatserver/chatserver/pkg/config"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

func init() {
	// test_sleep waits 10s on a body of "slow" (or until ctx is done, as
	// plugins must), and passes every other event on.
	pipeline.Register(pipeline.Spec{Name: "test_sleep", New: func(any, pipeline.Deps) (pipeline.Plugin, error) {
		return pipeline.PluginFunc(func(next pipeline.Handler) pipeline.Handler {
			return pipeline.HandlerFunc(func(ctx context.Context, ev *pipeline.Event) error {
				if ev.Kind == pipeline.Message && ev.In.Body == "slow" {
					select {
					case <-time.After(10 * time.Second):
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				return next.Handle(ctx, ev)
			})
		}), nil
	}})
}

// A step that outlives plugins.timeout costs that one event: the sender gets
// an error, the connection stays open and the next message goes through.
func TestPluginTimeoutCostsOneEvent(t *testing.T) {
	s := startServer(t, func(cfg *config.Config) {
		cfg.Plugins.Timeout = 100 * time.Millisecond
		cfg.Pipelines[pipeline.Message] = append([]pipeline.Step{{Use: "test_sleep"}}, cfg.Pipelines[pipeline.Message]...)
	})
	c := s.dial(t, "", nil)
	c.expect("history")
	c.expect("online")
	start := time.Now()
	c.send(map[string]string{"body": "slow"})
	if f := c.expect("error"); f.Code != pipeline.CodeInternal {
		t.Errorf("timed-out event: code %q, want internal", f.Code)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("error came after %v; the timeout is 100ms", d)
	}
	c.send(map[string]string{"body": "fast"})
	if f := c.expect("message"); f.Body != "fast" {
		t.Errorf("next message: %s", f.raw)
	}
}

// /metrics counts a rejection against the step that made it.
func TestMetricsCountPluginErrorsByStep(t *testing.T) {
	s := startServer(t, func(cfg *config.Config) {
		for i, st := range cfg.Pipelines[pipeline.Message] {
			if st.Use == "ratelimit" {
				cfg.Pipelines[pipeline.Message][i].With = map[string]any{"rate": 0.001, "burst": 1}
			}
		}
	})
	c := s.dial(t, "", nil)
	c.expect("history")
	c.expect("online")
	c.send(map[string]string{"body": "one"})
	c.expect("message")
	c.send(map[string]string{"body": "two"})
	if f := c.expect("error"); f.Code != pipeline.CodeRateLimited {
		t.Fatalf("second message: %s", f.raw)
	}
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	want := `chatserver_plugin_errors_total{code="rate_limited",pipeline="message",step="ratelimit"} 1`
	if !strings.Contains(string(b), want) {
		t.Errorf("/metrics lacks %s", want)
	}
	if !strings.Contains(string(b), `chatserver_plugin_step_seconds_count{pipeline="message",step="ratelimit"} 2`) {
		t.Errorf("/metrics lacks the ratelimit step's latency histogram")
	}
}
