package pipeline

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tagOptions is the options struct of the test plugin "tag".
type tagOptions struct {
	Text  string        `mapstructure:"text"`
	Count int           `mapstructure:"count"`
	Wait  time.Duration `mapstructure:"wait"`
}

func (o *tagOptions) Validate() error {
	if o.Count < 0 {
		return errors.New("count must not be negative")
	}
	return nil
}

func init() {
	// tag appends its text to the body, then calls next.
	Register(Spec{
		Name: "test_tag", Description: "appends text to the body",
		Options: func() any { return &tagOptions{Text: "+", Count: 1} },
		New: func(opts any, _ Deps) (Plugin, error) {
			o := opts.(*tagOptions)
			return PluginFunc(func(next Handler) Handler {
				return HandlerFunc(func(ctx context.Context, ev *Event) error {
					time.Sleep(o.Wait)
					ev.Envelope.Body += strings.Repeat(o.Text, o.Count)
					return next.Handle(ctx, ev)
				})
			}), nil
		},
	})
	// reject rejects every event; drop swallows it; boom panics.
	Register(Spec{Name: "test_reject", New: func(any, Deps) (Plugin, error) {
		return PluginFunc(func(Handler) Handler {
			return HandlerFunc(func(context.Context, *Event) error { return Reject(CodeRejected, "no") })
		}), nil
	}})
	Register(Spec{Name: "test_drop", New: func(any, Deps) (Plugin, error) {
		return PluginFunc(func(Handler) Handler {
			return HandlerFunc(func(context.Context, *Event) error { return nil })
		}), nil
	}})
	Register(Spec{Name: "test_boom", New: func(any, Deps) (Plugin, error) {
		return PluginFunc(func(Handler) Handler {
			return HandlerFunc(func(context.Context, *Event) error { panic("boom") })
		}), nil
	}})
}

func step(use string, with map[string]any) Step { return Step{Use: use, With: with} }

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"unknown plugin", Config{Message: []Step{step("nope", nil)}},
			[]string{"pipelines.message[0] (nope)", `unknown plugin "nope"`, "test_tag"}},
		{"missing use", Config{Join: []Step{{}}}, []string{"pipelines.join[0]", "missing `use:`"}},
		{"unknown option names key and known keys", Config{Message: []Step{step("test_tag", map[string]any{"txet": "x", "b": 1})}},
			[]string{"pipelines.message[0] (test_tag)", `unknown option "b", "txet"`, "known: text, count, wait"}},
		{"wrong type", Config{Leave: []Step{step("test_tag", map[string]any{"count": "many"})}},
			[]string{"pipelines.leave[0] (test_tag)", "count"}},
		{"bad duration", Config{Leave: []Step{step("test_tag", map[string]any{"wait": "soon"})}},
			[]string{"wait"}},
		{"two wrong types, on one line", Config{Leave: []Step{step("test_tag", map[string]any{"count": "many", "wait": "soon"})}},
			[]string{"count", "; ", "wait"}},
		{"validate", Config{Message: []Step{step("test_tag", nil), step("test_tag", map[string]any{"count": -1})}},
			[]string{"pipelines.message[1] (test_tag)", "count must not be negative"}},
		{"options to a plugin without options", Config{Message: []Step{step("test_drop", map[string]any{"z": 1, "a": 2})}},
			[]string{`unknown option "a", "z": plugin test_drop takes no options`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(tt.cfg, Deps{}, BuildOptions{})
			if err == nil {
				t.Fatal("Build succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q spans lines: config errors print on one", err)
			}
		})
	}
}

func TestRunOrderRejectDropPanic(t *testing.T) {
	tests := []struct {
		name      string
		steps     []Step
		wantBody  string
		wantCode  string
		wantPanic bool
		completed bool
	}{
		{"steps run in order", []Step{step("test_tag", map[string]any{"text": "a"}), step("test_tag", map[string]any{"text": "b", "count": 2})}, "abb", "", false, true},
		{"empty pipeline", nil, "", "", false, true},
		{"reject stops the rest", []Step{step("test_tag", map[string]any{"text": "a"}), step("test_reject", nil), step("test_tag", map[string]any{"text": "z"})}, "a", CodeRejected, false, false},
		{"drop stops the rest", []Step{step("test_drop", nil), step("test_tag", nil)}, "", "", false, false},
		{"panic costs the event", []Step{step("test_tag", nil), step("test_boom", nil)}, "+", CodeInternal, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Build(Config{Message: tt.steps}, Deps{}, BuildOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ev := &Event{Kind: Message}
			err = p.Run(context.Background(), ev)
			if ev.Envelope.Body != tt.wantBody {
				t.Errorf("body %q, want %q", ev.Envelope.Body, tt.wantBody)
			}
			if ev.Completed() != tt.completed {
				t.Errorf("Completed() = %v", ev.Completed())
			}
			var pe *PanicError
			if errors.As(err, &pe) != tt.wantPanic {
				t.Errorf("panic error = %v", err)
			}
			if tt.wantCode == "" && err != nil || tt.wantCode != "" && (err == nil || AsError(err).Code != tt.wantCode) {
				t.Errorf("err = %v, want code %q", err, tt.wantCode)
			}
		})
	}
}

type recorder struct {
	mu   sync.Mutex
	dur  map[string]time.Duration
	errs map[string]error
}

func (r *recorder) ObserveStep(_ Kind, step string, d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dur[step], r.errs[step] = d, err
}

// The observer sees each step's own time and only the errors it produced.
func TestObserverAttributesTimeAndErrors(t *testing.T) {
	rec := &recorder{dur: map[string]time.Duration{}, errs: map[string]error{}}
	cfg := Config{Message: []Step{
		{Use: "test_tag", Name: "fast"},
		{Use: "test_tag", Name: "slow", With: map[string]any{"wait": "30ms"}},
		{Use: "test_reject", Name: "no"},
	}}
	p, err := Build(cfg, Deps{}, BuildOptions{Observer: rec})
	if err != nil {
		t.Fatal(err)
	}
	_ = p.Run(context.Background(), &Event{Kind: Message})
	if rec.dur["slow"] < 30*time.Millisecond {
		t.Errorf("slow step own time %v < 30ms", rec.dur["slow"])
	}
	if rec.dur["fast"] >= 30*time.Millisecond {
		t.Errorf("fast step was charged the slow step's time: %v", rec.dur["fast"])
	}
	if rec.errs["no"] == nil || rec.errs["slow"] != nil || rec.errs["fast"] != nil {
		t.Errorf("errors attributed: %v", rec.errs)
	}
}

func TestFrameIsMemoisedUntilTheEnvelopeChanges(t *testing.T) {
	ev := &Event{Envelope: Envelope{ID: "1", Body: "a"}}
	f1, _ := ev.Frame()
	f2, _ := ev.Frame()
	if &f1[0] != &f2[0] {
		t.Error("unchanged envelope was encoded twice")
	}
	ev.Envelope.Body = "b"
	f3, _ := ev.Frame()
	if !strings.Contains(string(f3), `"body":"b"`) {
		t.Errorf("changed envelope not re-encoded: %s", f3)
	}
}

func TestRegisterPanicsOnMisuse(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
	}{
		{"empty name", Spec{New: func(any, Deps) (Plugin, error) { return nil, nil }}},
		{"nil New", Spec{Name: "test_nil_new"}},
		{"duplicate", Spec{Name: "test_tag", New: func(any, Deps) (Plugin, error) { return nil, nil }}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if v := recover(); v == nil || !strings.HasPrefix(v.(string), "pipeline: ") {
					t.Fatalf("recover() = %v, want a pipeline: panic", v)
				}
			}()
			Register(tt.spec)
		})
	}
}

func TestStepTimeoutCancelsContext(t *testing.T) {
	p, err := Build(Config{Message: []Step{step("test_wait_ctx", nil)}}, Deps{}, BuildOptions{EventTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(context.Background(), &Event{Kind: Message}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}

type closeCounter struct{ n atomic.Int32 }

// retireProbe hands TestRetireWaitsForEventsInFlight's counter and channels to
// the plugins below, which are registered once (Register panics on a second
// call, and -count=N runs a test N times).
var retireProbe struct {
	cc               *closeCounter
	entered, release chan struct{}
}

func init() {
	Register(Spec{Name: "test_wait_ctx", New: func(any, Deps) (Plugin, error) {
		return PluginFunc(func(next Handler) Handler {
			return HandlerFunc(func(ctx context.Context, ev *Event) error {
				<-ctx.Done()
				return ctx.Err()
			})
		}), nil
	}})
	Register(Spec{Name: "test_closer", New: func(any, Deps) (Plugin, error) { return retireProbe.cc, nil }})
	Register(Spec{Name: "test_block", New: func(any, Deps) (Plugin, error) {
		entered, release := retireProbe.entered, retireProbe.release
		return PluginFunc(func(next Handler) Handler {
			return HandlerFunc(func(ctx context.Context, ev *Event) error {
				close(entered)
				<-release
				return next.Handle(ctx, ev)
			})
		}), nil
	}})
}

func (c *closeCounter) Wrap(next Handler) Handler { return next }
func (c *closeCounter) Close() error              { c.n.Add(1); return nil }

// A retired pipeline closes its plugins only when the event inside it is done.
func TestRetireWaitsForEventsInFlight(t *testing.T) {
	cc := &closeCounter{}
	release := make(chan struct{})
	entered := make(chan struct{})
	retireProbe.cc, retireProbe.entered, retireProbe.release = cc, entered, release
	p, err := Build(Config{Message: []Step{step("test_closer", nil), step("test_block", nil)}}, Deps{}, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- p.Run(context.Background(), &Event{Kind: Message}) }()
	<-entered
	p.Retire()
	if n := cc.n.Load(); n != 0 {
		t.Fatalf("closed %d times while an event was inside", n)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := cc.n.Load(); n != 1 {
		t.Fatalf("closed %d times after the event left, want 1", n)
	}
	_ = p.Close()
	if n := cc.n.Load(); n != 1 {
		t.Fatalf("Close after retire closed again (%d)", n)
	}
}

func TestKindEnvelopeType(t *testing.T) {
	for kind, want := range map[Kind]string{
		Join: TypeOnline, Message: TypeMessage, Leave: TypeOffline,
	} {
		if got := kind.EnvelopeType(); got != want {
			t.Errorf("%s.EnvelopeType() = %q, want %q", kind, got, want)
		}
	}
}

func TestEventSetBody(t *testing.T) {
	tests := []struct {
		name, body, wantHTML string
	}{
		{"same body keeps the html", "hi", "<b>hi</b>"},
		{"new body drops html rendered from the old", "bye", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := &Event{In: Inbound{Body: "hi"}, Envelope: Envelope{Body: "hi", HTML: "<b>hi</b>"}}
			ev.SetBody(tt.body)
			if ev.In.Body != tt.body || ev.Envelope.Body != tt.body || ev.Envelope.HTML != tt.wantHTML {
				t.Errorf("in %q, envelope %q, html %q; want %q, %q, %q", ev.In.Body, ev.Envelope.Body, ev.Envelope.HTML, tt.body, tt.body, tt.wantHTML)
			}
		})
	}
}
