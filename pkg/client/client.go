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
//     backoff with full jitter), until Close or a final close by the server
//     (CloseKicked; CloseTokenExpired without a TokenFunc).
//   - Recovery: it reconnects with ?since=<the last kept message it saw>, and
//     remembers the ids it delivered, so Events carries every envelope once:
//     no gap (while the server's history still holds it), no duplicate.
//   - Acks: Send gives each frame a ref and returns the server's ack, or an
//     *Error with the server's code. A frame not yet acknowledged when the
//     connection drops is written again, same ref, once it is back; the
//     server acknowledges a ref it accepted before with the first id and does
//     not deliver it twice.
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
	// Username is sent as the username of every frame that has none: it
	// renames the connection where the server allows it. For a name from
	// the join on, set the seed's cookie in Header (see UsernameCookie).
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
	// MaxBackoff caps the reconnect delay. Zero means 10s.
	MaxBackoff time.Duration
	// ReadTimeout ends a connection that received no frame and no ping this
	// long (the server pings every websocket.ping_interval, 25s by default).
	// Zero means 60s.
	ReadTimeout time.Duration
	// WriteTimeout bounds one write. Zero means 10s.
	WriteTimeout time.Duration
	// Dedupe is how many envelope ids are remembered to drop duplicates.
	// Zero means 1000.
	Dedupe int
	// OnConnect is called each time a connection is ready (its history frame
	// arrived), from the client's reader: it must not block.
	OnConnect func(ConnectInfo)
	// OnDisconnect is called each time a connection ends, from the client's
	// reader: it must not block.
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
	wg         sync.WaitGroup
	events     chan Event
	notify     chan struct{}
	first      chan error
	stop       chan struct{} // closed by Close: the pump drops what is queued
	stopOnce   sync.Once

	mu        sync.Mutex
	conn      *websocket.Conn
	connected bool
	everConn  bool
	closed    bool
	err       error
	lastID    string
	seen      map[string]struct{}
	seenOrder []string
	pending   map[string]*pending
	order     []string
	queue     []Event
	refPrefix string
	refN      uint64
}

type pending struct {
	frame   []byte
	done    chan result
	written bool
}

type result struct {
	ack Ack
	err error
}

// Dial connects to the room at rawURL (the server's http(s) or ws(s)
// address, with or without the /chatsocket path) and returns once the
// connection is ready (the history frame arrived), or with the first
// attempt's error; ctx bounds only that. The client then reconnects by
// itself until Close.
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
	if opts.Dedupe <= 0 {
		opts.Dedupe = 1000
	}
	wsURL, membersURL, err := resolveURLs(rawURL, opts.Room)
	if err != nil {
		return nil, err
	}
	var rb [6]byte
	_, _ = rand.Read(rb[:])
	c := &Client{
		opts: opts, wsURL: wsURL, membersURL: membersURL,
		events: make(chan Event), notify: make(chan struct{}, 1), first: make(chan error, 1), stop: make(chan struct{}),
		lastID: opts.Since, seen: map[string]struct{}{}, pending: map[string]*pending{},
		refPrefix: hex.EncodeToString(rb[:]) + "-",
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(2)
	go c.run()
	go c.pump()
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

// Events returns the channel of every frame the server sends, in order, each
// envelope once. The client never blocks on it (frames wait in a queue of
// their own). It is closed by Close (what was still queued is dropped) and
// after a final close by the server (once what was queued was received).
func (c *Client) Events() <-chan Event { return c.events }

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

// LastID is the id of the last kept message seen: the ?since= of the next
// connect.
func (c *Client) LastID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastID
}

// Send sends m and waits for the server's answer: the ack, or an *Error with
// the server's code. While disconnected the frame waits and is written once
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
		c.writeLocked(p)
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
// closed. It waits for the client's goroutines and is idempotent.
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
	conn := c.conn
	for _, ref := range append([]string(nil), c.order...) {
		c.settleLocked(ref, result{err: ErrClosed})
	}
	c.notifyLocked() // the pump closes Events once the queue is empty
	c.mu.Unlock()
	c.cancel()
	if conn != nil {
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = conn.Close()
	}
}

// run dials, serves each connection, and waits out the backoff between them.
func (c *Client) run() {
	defer c.wg.Done()
	attempt := 0
	for {
		conn, err := c.dial()
		code, reason := 1006, ""
		if err == nil {
			err = c.serve(conn)
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				code, reason = ce.Code, ce.Text
			}
		}
		c.mu.Lock()
		closed, everConn, ready := c.closed, c.everConn, c.connected
		c.conn, c.connected = nil, false
		for _, p := range c.pending {
			p.written = false
		}
		c.mu.Unlock()
		if closed {
			return
		}
		if !everConn {
			// The first attempt failed: Dial reports it.
			c.first <- err
			return
		}
		if ready {
			attempt = 0
		}
		if code == CloseKicked || code == CloseTokenExpired && c.opts.TokenFunc == nil {
			ce := &CloseError{Code: code, Reason: reason}
			c.disconnected(DisconnectInfo{Code: code, Reason: reason, Err: err})
			c.shut(ce)
			return
		}
		ceiling := min(c.opts.MaxBackoff, c.opts.MinBackoff<<min(attempt, 30))
		delay := time.Duration(mrand.Int64N(int64(ceiling))) //nolint:gosec // G404: jitter needs no unpredictability
		attempt++
		c.disconnected(DisconnectInfo{Code: code, Reason: reason, Err: err, Reconnect: true, Delay: delay})
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return
		}
	}
}

func (c *Client) disconnected(info DisconnectInfo) {
	if c.opts.OnDisconnect != nil {
		c.opts.OnDisconnect(info)
	}
}

// token returns Token, or what TokenFunc gives.
func (c *Client) token(ctx context.Context) (string, error) {
	if c.opts.TokenFunc == nil {
		return c.opts.Token, nil
	}
	t, err := c.opts.TokenFunc(ctx)
	if err != nil {
		return "", fmt.Errorf("chatserver: token: %w", err)
	}
	return t, nil
}

// dial opens one connection, with ?since= and the token.
func (c *Client) dial() (*websocket.Conn, error) {
	q := url.Values{}
	if id := c.LastID(); id != "" {
		q.Set("since", id)
	}
	token, err := c.token(c.ctx)
	if err != nil {
		return nil, err
	}
	if token != "" {
		q.Set(c.opts.TokenParam, token)
	}
	u := c.wsURL
	if len(q) > 0 {
		u += "&" + q.Encode()
	}
	conn, resp, err := c.opts.Dialer.DialContext(c.ctx, u, c.opts.Header)
	if err != nil {
		if resp != nil {
			_ = resp.Body.Close()
			return nil, &Error{Code: "http_" + strconv.Itoa(resp.StatusCode), Reason: "handshake refused: " + resp.Status}
		}
		return nil, fmt.Errorf("chatserver: dial: %w", err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = conn.Close()
		return nil, ErrClosed
	}
	c.conn = conn
	c.mu.Unlock()
	return conn, nil
}

// serve reads conn's frames until it ends, and returns why.
func (c *Client) serve(conn *websocket.Conn) error {
	defer conn.Close()
	extend := func() { _ = conn.SetReadDeadline(time.Now().Add(c.opts.ReadTimeout)) }
	extend()
	conn.SetPingHandler(func(data string) error {
		extend()
		err := conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(c.opts.WriteTimeout))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	for {
		mt, b, err := conn.ReadMessage()
		if err != nil {
			return err
		}
		extend()
		if mt == websocket.TextMessage {
			c.handle(b)
		}
	}
}

// handle decodes and delivers one frame.
func (c *Client) handle(b []byte) {
	var ev Event
	if err := json.Unmarshal(b, &ev); err != nil {
		return
	}
	ev.Raw = b
	switch ev.Type {
	case TypeHistory:
		c.onHistory(ev)
		return
	case TypeAck:
		c.mu.Lock()
		c.settleLocked(ev.Ref, result{ack: Ack{Ref: ev.Ref, ID: ev.ID}})
		c.emitLocked(ev)
		c.mu.Unlock()
		return
	case TypeError:
		c.mu.Lock()
		if ev.Ref != "" {
			c.settleLocked(ev.Ref, result{err: &Error{Code: ev.Code, Reason: ev.Reason, Ref: ev.Ref}})
		}
		c.emitLocked(ev)
		c.mu.Unlock()
		return
	case TypeDelete:
		c.mu.Lock()
		c.emitLocked(ev)
		c.mu.Unlock()
		return
	}
	c.mu.Lock()
	if c.freshLocked(ev.ID) {
		c.keepLocked(ev)
		c.emitLocked(ev)
	}
	c.mu.Unlock()
}

func (c *Client) onHistory(ev Event) {
	var raw struct {
		Messages []json.RawMessage `json:"messages"`
	}
	_ = json.Unmarshal(ev.Raw, &raw)
	c.mu.Lock()
	fresh := make([]Event, 0, len(raw.Messages))
	for _, m := range raw.Messages {
		var e Event
		if json.Unmarshal(m, &e) != nil {
			continue
		}
		e.Raw, e.FromHistory = m, true
		if c.freshLocked(e.ID) {
			fresh = append(fresh, e)
		}
	}
	if n := len(ev.Messages); n > 0 && ev.Messages[n-1].ID != "" {
		// The history frame is the server's record: its last entry is kept.
		c.lastID = ev.Messages[n-1].ID
	}
	ev.Messages = fresh
	c.emitLocked(ev)
	for _, e := range fresh {
		c.emitLocked(e)
	}
	info := ConnectInfo{Recovered: c.everConn, Complete: ev.Complete == nil || *ev.Complete}
	first := !c.everConn
	c.connected, c.everConn = true, true
	for _, ref := range c.order {
		c.writeLocked(c.pending[ref])
	}
	c.mu.Unlock()
	if first {
		c.first <- nil
	}
	if c.opts.OnConnect != nil {
		c.opts.OnConnect(info)
	}
}

// writeLocked writes p on the current connection unless it was written
// there already. A failed write closes the connection: its reader then
// reconnects, and p goes again.
func (c *Client) writeLocked(p *pending) {
	if c.conn == nil || p.written {
		return
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
	if err := c.conn.WriteMessage(websocket.TextMessage, p.frame); err != nil {
		_ = c.conn.Close()
		return
	}
	p.written = true
}

func (c *Client) settleLocked(ref string, r result) {
	p, ok := c.pending[ref]
	if !ok {
		return
	}
	delete(c.pending, ref)
	for i, o := range c.order {
		if o == ref {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
	p.done <- r
}

// freshLocked reports whether envelope id was not delivered yet, and
// remembers it.
func (c *Client) freshLocked(id string) bool {
	if id == "" {
		return true
	}
	if _, ok := c.seen[id]; ok {
		return false
	}
	c.seen[id] = struct{}{}
	c.seenOrder = append(c.seenOrder, id)
	if len(c.seenOrder) > c.opts.Dedupe {
		delete(c.seen, c.seenOrder[0])
		c.seenOrder = c.seenOrder[1:]
	}
	return true
}

// keepLocked moves ?since= to ev when the server keeps such envelopes: room
// messages from a member (system replies, client_id 0, and direct messages
// are never kept; resuming after one would report a false gap).
func (c *Client) keepLocked(ev Event) {
	if ev.ID != "" && ev.Type == TypeMessage && ev.ClientID != 0 && ev.To == "" {
		c.lastID = ev.ID
	}
}

func (c *Client) emitLocked(ev Event) {
	c.queue = append(c.queue, ev)
	c.notifyLocked()
}

func (c *Client) notifyLocked() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// pump moves queued events to the Events channel, so that the reader never
// waits for the consumer. Once the client is closed it closes Events: at
// once after Close, after the queue is drained after a final close by the
// server.
func (c *Client) pump() {
	defer c.wg.Done()
	defer close(c.events)
	for {
		c.mu.Lock()
		q, closed := c.queue, c.closed
		c.queue = nil
		c.mu.Unlock()
		for _, ev := range q {
			select {
			case c.events <- ev:
			case <-c.stop:
				return
			}
		}
		if len(q) > 0 {
			continue
		}
		if closed {
			return
		}
		select {
		case <-c.notify:
		case <-c.stop:
			return
		}
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
