package plugins

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func init() {
	pipeline.Register(pipeline.NewSpec("ratelimit",
		"per-client token bucket; over the limit the sender gets error rate_limited",
		DefaultRateLimitOptions,
		func(o *RateLimitOptions, _ pipeline.Deps) (pipeline.Plugin, error) { return NewRateLimit(*o) }))
}

// RateLimitOptions configure the ratelimit plugin.
type RateLimitOptions struct {
	// Rate is the sustained number of messages per second a client may send.
	// Default 5.
	Rate float64 `mapstructure:"rate"`
	// Burst is how many messages a client may send at once after being quiet
	// (the bucket's size). Default 10.
	Burst int `mapstructure:"burst"`
}

// DefaultRateLimitOptions returns the options a step without `with:` gets.
func DefaultRateLimitOptions() *RateLimitOptions {
	return &RateLimitOptions{Rate: 5, Burst: 10}
}

// Validate rejects limits that would refuse every message.
func (o *RateLimitOptions) Validate() error {
	var errs []error
	if !(o.Rate > 0) { // also catches NaN
		errs = append(errs, fmt.Errorf("rate must be greater than 0, got %v", o.Rate))
	}
	if o.Burst < 1 {
		errs = append(errs, fmt.Errorf("burst must be at least 1, got %d", o.Burst))
	}
	return errors.Join(errs...)
}

// RateLimit is the ratelimit plugin. Each client has its own token bucket,
// kept in the connection's state so that it dies with the connection and needs
// no cleanup or global map. Message and custom-kind events are limited; join
// and leave happen once per connection. Every step has buckets of its own, so
// a ratelimit step in a custom kind's pipeline limits that kind alone.
// Trusted senders (the server API's callers) are not limited.
type RateLimit struct {
	limit rate.Limit
	burst int
	// key is unique to this instance, so two ratelimit steps (say, a strict
	// one after a filter) keep separate buckets for the same client.
	key rateKey
	// mu serialises creating a client's bucket, so two concurrent first
	// messages of one client cannot each get a fresh, full bucket.
	mu sync.Mutex
	// now is the clock; tests replace it.
	now func() time.Time
}

// rateKey is the type of RateLimit.key; a pointer to the instance makes it
// unique per instance and comparable, as Sender.Value requires.
type rateKey struct{ rl *RateLimit }

// NewRateLimit returns a ratelimit plugin. It validates opts.
func NewRateLimit(opts RateLimitOptions) (*RateLimit, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	rl := &RateLimit{limit: rate.Limit(opts.Rate), burst: opts.Burst, now: time.Now}
	rl.key = rateKey{rl}
	return rl, nil
}

// Wrap implements pipeline.Plugin.
func (rl *RateLimit) Wrap(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(ctx context.Context, ev *pipeline.Event) error {
		if ev.Kind == pipeline.Join || ev.Kind == pipeline.Leave || pipeline.IsTrusted(ev.Sender) {
			return next.Handle(ctx, ev)
		}
		if ev.Sender == nil {
			return errors.New("ratelimit: event has no sender")
		}
		if !rl.limiter(ev.Sender).AllowN(rl.now(), 1) {
			return pipeline.Reject(pipeline.CodeRateLimited,
				"too many messages: at most %v per second (bursts of %d); slow down", float64(rl.limit), rl.burst)
		}
		return next.Handle(ctx, ev)
	})
}

// limiter returns the client's bucket, creating a full one on first use.
func (rl *RateLimit) limiter(s pipeline.Sender) *rate.Limiter {
	if l, ok := s.Value(rl.key).(*rate.Limiter); ok {
		return l
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if l, ok := s.Value(rl.key).(*rate.Limiter); ok {
		return l
	}
	l := rate.NewLimiter(rl.limit, rl.burst)
	s.SetValue(rl.key, l)
	return l
}

var _ pipeline.Plugin = (*RateLimit)(nil)
