// Package client is a Go client of chatserver's WebSocket protocol, for bots
// and services: one member of one room that stays connected.
//
//	c, err := client.Dial(ctx, "http://127.0.0.1:8000", client.Options{Room: "lobby", Username: "bot"})
//	if err != nil { … }
//	defer c.Close()
//	for ev := range c.Events() {
//		if ev.Type == client.TypeMessage && ev.Body == "ping" {
//			c.Send(ctx, client.Message{Body: "pong"})
//		}
//	}
//
// Its guarantees are the JavaScript client's (clients/js):
//   - Reconnect: when a connection ends the client dials again after a delay
//     drawn from [0, min(MaxBackoff, MinBackoff·2^attempt)) (exponential
//     backoff with full jitter). attempt goes back to 0 only once a
//     connection stayed ready for MaxBackoff: a server that closes every
//     connection right after its history frame is not hammered. The client
//     stops, for good, on Close or on a final close by the server:
//     CloseKicked; CloseTokenExpired without a TokenFunc; a refused join
//     (1008 before the history frame) without a TokenFunc, or after
//     MaxRefusals refusals in a row with one.
//   - Liveness: the server pings every websocket.ping_interval (25s by
//     default); a connection that brings no frame and no ping for
//     ReadTimeout is closed and dialled again (a half-open TCP connection
//     does not stay "connected").
//   - Recovery: it reconnects with ?since=<the last kept envelope it saw>
//     (see LastID for the rule), and remembers the ids it delivered (Dedupe,
//     at least the server's history.size), so Events carries every kept
//     envelope once: no gap while the server's history still holds it, no
//     duplicate. Direct messages (with To), system replies and envelopes of
//     kinds the server does not keep (typing, by default) are live only: what
//     came while disconnected is not recovered. A delete arrives live only.
//   - Acks: Send gives each frame a ref and returns the server's ack, or an
//     *Error with the server's code. A frame not yet acknowledged when the
//     connection drops is written again, same ref, once it is back; the
//     server acknowledges a ref it accepted before with the first id and does
//     not deliver it twice. It recognises the resend by the sender's name:
//     the proven name in signed/jwt mode; in plain mode the frame's username
//     (Options.Username is sent with every frame, resends included), else
//     the connection's name — a guest without Username or a username cookie
//     gets a new name on each connection, so its resends are not recognised
//     and a frame whose ack was lost may be delivered twice.
package client

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// ErrClosed is returned by Send after Close (or after the server closed the
// client for good; Err tells why).
var ErrClosed = errors.New("chatserver: client closed")

// Options configures a Client. The zero value joins "lobby" with the default
// backoff and timeouts.
type Options struct {
	// Room is the room to join. Empty means "lobby".
	Room string
	// Token is a JWT for the username plugin's jwt mode, sent as the query
	// parameter TokenParam of every handshake.
	Token string
	// TokenFunc, when set, is called before every dial for the token (so an
	// expired one can be replaced); it overrides Token.
	TokenFunc func(ctx context.Context) (string, error)
	// TokenParam is the query parameter of the token (the plugin's
	// token_param). Empty means "token".
	TokenParam string
	// Username is sent as the username of every frame that has none
	// (resends included): it renames the connection where the server allows
	// it, and it is the name a resent ref is recognised by in plain mode.
	// For a name from the join on, set the seed's cookie in Header (see
	// UsernameCookie).
	Username string
	// Header is sent with every handshake (Cookie, Origin, …).
	Header http.Header
	// Since resumes after this message id on the first connect.
	Since string
	// Dialer dials the WebSocket. Nil means websocket.DefaultDialer.
	Dialer *websocket.Dialer
	// HTTPClient makes Members' request. Nil means http.DefaultClient.
	HTTPClient *http.Client
	// MinBackoff bounds the first reconnect's delay. Zero means 500ms.
	MinBackoff time.Duration
	// MaxBackoff caps the reconnect delay; a connection that stayed ready
	// this long resets the backoff. Zero means 10s.
	MaxBackoff time.Duration
	// MaxRefusals is how many refused joins in a row a client with a
	// TokenFunc tries before it stops (without one, the first refusal is
	// final). Zero means 3.
	MaxRefusals int
	// ReadTimeout ends a connection that received no frame and no ping this
	// long (the server pings every websocket.ping_interval, 25s by default).
	// Zero means 60s.
	ReadTimeout time.Duration
	// WriteTimeout bounds one write. Zero means 10s.
	WriteTimeout time.Duration
	// MaxFrameBytes is the largest frame Send writes (the server's
	// websocket.max_message_bytes); a larger one fails with an *Error of
	// code "too_big" without being sent. Zero means 8192.
	MaxFrameBytes int
	// Dedupe is how many envelope ids are remembered to drop duplicates;
	// keep it at least the server's history.size (a recovery may resend the
	// whole history). Zero means 1000; less than 100 means 100.
	Dedupe int
	// EventBuffer is how many events wait for a reader of Events; when it
	// is full the oldest is dropped (DroppedEvents counts them). Zero means
	// 1024; a negative value discards every event (Events only closes), for
	// clients that only Send.
	EventBuffer int
	// OnConnect is called each time a connection is ready (its history frame
	// arrived). Callbacks are called one at a time, in order, from a
	// goroutine of the client's that does not read the network: a slow
	// callback delays only the callbacks after it, and a callback may call
	// Close.
	OnConnect func(ConnectInfo)
	// OnDisconnect is called each time a connection ends, as OnConnect is.
	OnDisconnect func(DisconnectInfo)
}

// ConnectInfo describes a connection that became ready.
type ConnectInfo struct {
	// Recovered is true from the second connection on: its history frame
	// held what was missed.
	Recovered bool
	// Complete is false when the history no longer held the last message
	// seen (a gap is possible).
	Complete bool
}

// DisconnectInfo describes a connection that ended.
type DisconnectInfo struct {
	// Code and Reason are the server's close frame's (1006 with none).
	Code   int
	Reason string
	// Err is what ended the connection.
	Err error
	// Reconnect reports whether the client dials again, after Delay.
	Reconnect bool
	Delay     time.Duration
}

// UsernameCookie returns a Header with the seed's username cookie (base64 of
// the name), which the default config's join step reads: the client has that
// name from its join on, on every connection.
func UsernameCookie(name string) http.Header {
	h := http.Header{}
	h.Set("Cookie", "username="+base64.StdEncoding.EncodeToString([]byte(name)))
	return h
}

// Client is one member of one room; see Dial. Its methods are safe for
// concurrent use.
type Client struct {
	opts       Options
	wsURL      string
	membersURL string
	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup // run and pump
	events     chan Event
	notify     chan struct{} // wakes the pump
	cbWake     chan struct{} // wakes the callback goroutine
	first      chan error
	stop       chan struct{} // closed by Close: the pump drops what is queued
	stopOnce   sync.Once

	mu        sync.Mutex
	link      *link // the current connection, nil between connections
	connected bool
	readyAt   time.Time // when the current connection became ready
	everConn  bool
	closed    bool
	err       error
	joinErr   *Error // the error frame of a refused join, before any history frame
	lastID    string
	kept      []string        // ids of envelopes believed kept, oldest first (for a delete of lastID)
	keptKinds map[string]bool // envelope types seen in a history frame
	seen      map[string]struct{}
	seenOrder []string
	pending   map[string]*pending
	order     []string
	queue     []Event
	dropped   uint64
	callbacks []func()
	refPrefix string
	refN      uint64
}

type pending struct {
	frame   []byte
	done    chan result
	written bool // on the current connection
}

type result struct {
	ack Ack
	err error
}

// Dial connects to the room at rawURL (the server's http(s) or ws(s)
// address, with or without the /chatsocket path) and returns once the
// connection is ready (the history frame arrived), or with the first
// attempt's error (an *Error with code "rejected" and the server's reason
// when the join was refused); ctx bounds only that. The client then
// reconnects by itself until Close.
func Dial(ctx context.Context, rawURL string, opts Options) (*Client, error) {
	if opts.Room == "" {
		opts.Room = "lobby"
	}
	if opts.TokenParam == "" {
		opts.TokenParam = "token"
	}
	if opts.Dialer == nil {
		opts.Dialer = websocket.DefaultDialer
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	opts.MinBackoff = orDefault(opts.MinBackoff, 500*time.Millisecond)
	opts.MaxBackoff = orDefault(opts.MaxBackoff, 10*time.Second)
	opts.ReadTimeout = orDefault(opts.ReadTimeout, 60*time.Second)
	opts.WriteTimeout = orDefault(opts.WriteTimeout, 10*time.Second)
	switch {
	case opts.Dedupe == 0:
		opts.Dedupe = 1000
	case opts.Dedupe < 100:
		opts.Dedupe = 100
	}
	if opts.MaxFrameBytes <= 0 {
		opts.MaxFrameBytes = 8192
	}
	if opts.EventBuffer == 0 {
		opts.EventBuffer = 1024
	}
	if opts.MaxRefusals <= 0 {
		opts.MaxRefusals = 3
	}
	wsURL, membersURL, err := resolveURLs(rawURL, opts.Room)
	if err != nil {
		return nil, err
	}
	var rb [6]byte
	_, _ = rand.Read(rb[:])
	c := &Client{
		opts: opts, wsURL: wsURL, membersURL: membersURL,
		events: make(chan Event), notify: make(chan struct{}, 1), cbWake: make(chan struct{}, 1),
		first: make(chan error, 1), stop: make(chan struct{}),
		lastID: opts.Since, keptKinds: map[string]bool{TypeMessage: true},
		seen: map[string]struct{}{}, pending: map[string]*pending{},
		refPrefix: hex.EncodeToString(rb[:]) + "-",
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(2)
	go c.run()
	go c.pump()
	go c.runCallbacks()
	select {
	case err := <-c.first:
		if err != nil {
			_ = c.Close()
			return nil, err
		}
		return c, nil
	case <-ctx.Done():
		_ = c.Close()
		return nil, ctx.Err()
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// jitter draws a reconnect delay in [0, n); tests replace it.
var jitter = func(n int64) int64 { return mrand.Int64N(n) } //nolint:gosec // G404: jitter needs no unpredictability

// Events returns the channel of every frame the server sends, in order, each
// envelope once. The client never blocks on it: frames wait in a queue of
// EventBuffer, and the oldest is dropped when it is full (DroppedEvents). It
// is closed by Close (what was still queued is dropped) and after a final
// close by the server (once what was queued was received).
func (c *Client) Events() <-chan Event { return c.events }

// DroppedEvents is how many events were dropped because nobody read Events
// and EventBuffer was full (the events discarded by a negative EventBuffer
// are not counted).
func (c *Client) DroppedEvents() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

// Err returns why the server closed the client for good (a *CloseError), or
// nil.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Connected reports whether a connection is ready now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

// LastID is the ?since= of the next connect: the id of the last envelope
// seen that the server is believed to keep in history. The client cannot
// know for sure, so the rule is: the last entry of a history frame; then a
// live envelope with an id, no To, that is not a system reply (username
// "system" with client_id 0 — an API post of another name counts), of type
// message or of a type seen in a history frame (a kind the server keeps).
// When a delete removes it, the previous such id takes its place. A wrong
// guess costs no message: the server then sends its whole history (marked
// incomplete) and the ids already delivered are dropped.
func (c *Client) LastID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastID
}

// Send sends m and waits for the server's answer: the ack, or an *Error with
// the server's code (or "too_big", without sending, for a frame over
// MaxFrameBytes). While disconnected the frame waits and is written once
// connected again (and again after each reconnect until answered); ctx
// bounds the wait (the frame is then forgotten, though it may have been
// delivered). After Close it returns ErrClosed.
func (c *Client) Send(ctx context.Context, m Message) (Ack, error) {
	if m.Username == "" {
		m.Username = c.opts.Username
	}
	c.mu.Lock()
	if m.Ref == "" {
		c.refN++
		m.Ref = c.refPrefix + strconv.FormatUint(c.refN, 36)
	}
	c.mu.Unlock()
	b, err := json.Marshal(m)
	if err != nil {
		return Ack{}, fmt.Errorf("chatserver: encoding the frame: %w", err)
	}
	if len(b) > c.opts.MaxFrameBytes {
		return Ack{}, tooBig(c.opts.MaxFrameBytes, m.Ref)
	}
	p := &pending{frame: b, done: make(chan result, 1)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return Ack{}, ErrClosed
	}
	if _, dup := c.pending[m.Ref]; dup {
		c.mu.Unlock()
		return Ack{}, &Error{Code: "invalid_json", Reason: "ref " + strconv.Quote(m.Ref) + " is already waiting for its ack", Ref: m.Ref}
	}
	c.pending[m.Ref] = p
	c.order = append(c.order, m.Ref)
	if c.connected {
		c.link.wakeup()
	}
	c.mu.Unlock()
	select {
	case r := <-p.done:
		return r.ack, r.err
	case <-ctx.Done():
		c.mu.Lock()
		c.settleLocked(m.Ref, result{err: ctx.Err()})
		c.mu.Unlock()
		return Ack{}, ctx.Err()
	}
}

func tooBig(limit int, ref string) *Error {
	return &Error{Code: "too_big", Reason: "the frame is over " + strconv.Itoa(limit) + " bytes (websocket.max_message_bytes)", Ref: ref}
}

// Members lists who is in the room now, on every node
// (GET /api/rooms/{room}/members). Rooms that admit proven members only
// answer those who prove it as they would join: the request carries Header
// (a signed cookie) and the token as the query parameter TokenParam.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	u := c.membersURL
	token, err := c.token(ctx)
	if err != nil {
		return nil, err
	}
	if token != "" {
		u += "?" + url.Values{c.opts.TokenParam: {token}}.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	for k, vs := range c.opts.Header {
		req.Header[k] = vs
	}
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &Error{Code: "http_" + strconv.Itoa(resp.StatusCode), Reason: "GET " + c.membersURL}
	}
	var ms []Member
	if err := json.NewDecoder(resp.Body).Decode(&ms); err != nil {
		return nil, fmt.Errorf("chatserver: members: %w", err)
	}
	return ms, nil
}

// Close ends the client: the connection is closed (1000), no reconnect
// follows, every Send waiting for its ack returns ErrClosed, and Events is
// closed. It waits for the goroutines that read and write the network and
// Events, and is idempotent. It may be called from OnConnect and
// OnDisconnect: callbacks run on a goroutine Close does not wait for (it
// ends once the callbacks queued before the close have run).
func (c *Client) Close() error {
	c.shut(nil)
	c.stopOnce.Do(func() { close(c.stop) })
	c.wg.Wait()
	return nil
}

// shut marks the client closed (err: why, when the server decided) and
// unblocks its goroutines.
func (c *Client) shut(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed, c.err, c.connected = true, err, false
	var conn *websocket.Conn
	if c.link != nil {
		conn = c.link.conn
	}
	for _, ref := range append([]string(nil), c.order...) {
		c.settleLocked(ref, result{err: ErrClosed})
	}
	c.notifyLocked() // the pump closes Events once the queue is empty
	c.wakeCallbacks()
	c.mu.Unlock()
	c.cancel()
	if conn != nil {
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = conn.Close()
	}
}

// resolveURLs returns the WebSocket URL (with ?room=) and the members URL.
func resolveURLs(raw, room string) (ws, members string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", fmt.Errorf("chatserver: url: %w", err)
	}
	var wsScheme, httpScheme string
	switch u.Scheme {
	case "http", "ws":
		wsScheme, httpScheme = "ws", "http"
	case "https", "wss":
		wsScheme, httpScheme = "wss", "https"
	default:
		return "", "", fmt.Errorf("chatserver: url %q: want http, https, ws or wss", raw)
	}
	path := strings.TrimSuffix(strings.TrimRight(u.Path, "/"), "/chatsocket")
	r := url.PathEscape(room)
	ws = wsScheme + "://" + u.Host + path + "/chatsocket?room=" + url.QueryEscape(room)
	members = httpScheme + "://" + u.Host + path + "/api/rooms/" + r + "/members"
	return ws, members, nil
}
