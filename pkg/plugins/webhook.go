package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

func init() {
	pipeline.Register(pipeline.NewSpec("webhook",
		"POSTs the event as JSON to a URL; the reply passes, changes, rejects or answers it (plugins in any language)",
		DefaultWebhookOptions,
		func(o *WebhookOptions, deps pipeline.Deps) (pipeline.Plugin, error) { return NewWebhook(*o, deps) }))
}

// WebhookOptions configure the webhook plugin.
type WebhookOptions struct {
	// URL is the http(s) endpoint each event is POSTed to. Required.
	URL string `mapstructure:"url"`
	// Timeout bounds one call, connection included. The event's own deadline
	// (plugins.timeout) bounds it too. Default 2s.
	Timeout time.Duration `mapstructure:"timeout"`
	// FailOpen decides what happens when the endpoint cannot answer (down,
	// timeout, a non-2xx status, a reply that is not the JSON below): false
	// (the default) fails the event — the sender gets `error internal` and
	// the server logs why; true lets the event pass unchanged, with a warning
	// in the log.
	FailOpen bool `mapstructure:"fail_open"`
	// Headers are added to every request (e.g. an Authorization token).
	// Default none.
	Headers map[string]string `mapstructure:"headers"`
	// Kinds are the events sent: any of "join", "message", "leave" or a
	// custom kind (a list, or one comma-separated string). Other events pass
	// without a call. Default ["message"].
	Kinds []string `mapstructure:"kinds"`
}

// DefaultWebhookOptions returns the options a step without `with:` gets.
func DefaultWebhookOptions() *WebhookOptions {
	return &WebhookOptions{Timeout: 2 * time.Second, Kinds: []string{string(pipeline.Message)}}
}

// Validate checks the URL, the timeout and the kinds.
func (o *WebhookOptions) Validate() error {
	if o.URL == "" {
		return errors.New("url is required")
	}
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url must be an http:// or https:// URL, got %q", o.URL)
	}
	if o.Timeout <= 0 {
		return fmt.Errorf("timeout must be positive, got %v", o.Timeout)
	}
	if len(o.Kinds) == 0 {
		return errors.New("kinds must name at least one of join, message, leave or a custom kind")
	}
	for _, k := range o.Kinds {
		if err := pipeline.CheckKind(pipeline.Kind(k)); err != nil {
			return fmt.Errorf("kinds: unknown kind %q (known: join, message, leave or a custom kind)", k)
		}
	}
	return nil
}

// WebhookRequest is the JSON body POSTed for each event. Event is the
// pipeline kind ("join", "message", "leave"); Envelope is the envelope as
// built so far by the steps before the webhook.
type WebhookRequest struct {
	Event    string            `json:"event"`
	Room     string            `json:"room"`
	ClientID int64             `json:"client_id"`
	Username string            `json:"username"`
	Body     string            `json:"body"`
	Envelope pipeline.Envelope `json:"envelope"`
}

// Webhook actions, the `action` of a WebhookResponse.
const (
	WebhookPass   = "pass"   // go on unchanged (also: empty action, empty body, 204)
	WebhookModify = "modify" // replace the body with Body, go on
	WebhookReject = "reject" // stop; the sender gets `error rejected` with Reason
	WebhookReply  = "reply"  // stop; the sender alone gets Reply as a system message
)

// WebhookResponse is what the endpoint answers (status 2xx). With pass or
// modify, a non-empty Reply is also sent to the sender.
type WebhookResponse struct {
	Action string `json:"action"`
	Body   string `json:"body,omitempty"`
	Reason string `json:"reason,omitempty"`
	Reply  string `json:"reply,omitempty"`
}

// maxWebhookReply bounds the reply read from an endpoint.
const maxWebhookReply = 1 << 20

// Webhook is the webhook plugin. One http.Client (with its connection pool)
// serves every event of the step; each call carries the event's context, so
// it ends at the step's timeout or the event's deadline, whichever is first.
type Webhook struct {
	opts    WebhookOptions
	kinds   map[pipeline.Kind]bool
	client  *http.Client
	log     *slog.Logger
	replier *replier
}

// webhookTransport is a step's own connection pool. http.DefaultTransport
// would be shared by every step and keep at most 2 idle connections per
// host, so a busy step would open a new connection for most messages, and
// one step's Close (on every hot reload) would drop every step's
// connections.
func webhookTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	return t
}

// NewWebhook returns a webhook plugin. It validates opts.
func NewWebhook(opts WebhookOptions, deps pipeline.Deps) (*Webhook, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	w := &Webhook{
		opts:    opts,
		kinds:   map[pipeline.Kind]bool{},
		client:  &http.Client{Timeout: opts.Timeout, Transport: webhookTransport()},
		log:     deps.Logger,
		replier: newReplier(deps.Templates),
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	for _, k := range opts.Kinds {
		w.kinds[pipeline.Kind(k)] = true
	}
	return w, nil
}

// Wrap implements pipeline.Plugin.
func (w *Webhook) Wrap(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(ctx context.Context, ev *pipeline.Event) error {
		if !w.kinds[ev.Kind] {
			return next.Handle(ctx, ev)
		}
		resp, err := w.call(ctx, ev)
		if err != nil {
			if w.opts.FailOpen {
				w.log.Warn("webhook failed; the event passes (fail_open)", "url", w.opts.URL, "err", err)
				return next.Handle(ctx, ev)
			}
			return fmt.Errorf("webhook %s: %w", w.opts.URL, err)
		}
		switch resp.Action {
		case WebhookReject:
			reason := resp.Reason
			if reason == "" {
				reason = "refused by a webhook"
			}
			return pipeline.Reject(pipeline.CodeRejected, "%s", reason)
		case WebhookReply:
			return w.replier.reply(ev, resp.Reply)
		case WebhookModify:
			body := cleanBody(resp.Body)
			if body == "" {
				return pipeline.Reject(pipeline.CodeEmpty, "body is empty")
			}
			ev.SetBody(body) // drops html rendered from the old body
		}
		if resp.Reply != "" {
			if err := w.replier.reply(ev, resp.Reply); err != nil {
				return err
			}
		}
		return next.Handle(ctx, ev)
	})
}

// call POSTs ev and decodes the answer. Any failure to get a valid answer is
// an error; what it costs is the caller's (fail_open) decision.
func (w *Webhook) call(ctx context.Context, ev *pipeline.Event) (*WebhookResponse, error) {
	e := ev.Envelope
	req := WebhookRequest{Event: string(ev.Kind), Room: e.Room, ClientID: e.ClientID, Username: e.Username, Body: e.Body, Envelope: e}
	if ev.Sender != nil {
		if req.Room == "" {
			req.Room = ev.Sender.Room()
		}
		if req.ClientID == 0 {
			req.ClientID = ev.Sender.ID()
		}
		if req.Username == "" {
			req.Username = ev.Sender.Username()
		}
	}
	if req.Body == "" {
		req.Body = ev.In.Body
	}
	b, err := json.Marshal(&req)
	if err != nil {
		return nil, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, w.opts.URL, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("User-Agent", "chatserver-webhook")
	for k, v := range w.opts.Headers {
		hr.Header.Set(k, v)
	}
	res, err := w.client.Do(hr)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxWebhookReply))
	if err != nil {
		return nil, fmt.Errorf("reading reply: %w", err)
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return nil, fmt.Errorf("status %s", res.Status)
	}
	var out WebhookResponse
	if len(bytes.TrimSpace(data)) == 0 {
		return &out, nil // 204 or an empty 200: pass
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("reply is not JSON: %w", err)
	}
	switch out.Action {
	case "", WebhookPass, WebhookModify, WebhookReject, WebhookReply:
	default:
		return nil, fmt.Errorf("unknown action %q (known: pass, modify, reject, reply)", out.Action)
	}
	if out.Action == WebhookReply && strings.TrimSpace(out.Reply) == "" {
		return nil, errors.New(`action "reply" with an empty reply`)
	}
	return &out, nil
}

// Close releases the client's idle connections. Calls in flight finish.
func (w *Webhook) Close() error {
	w.client.CloseIdleConnections()
	return nil
}

var (
	_ pipeline.Plugin = (*Webhook)(nil)
	_ io.Closer       = (*Webhook)(nil)
)
