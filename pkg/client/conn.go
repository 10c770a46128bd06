package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
)

// link is one connection and the wake-up channel of its writer.
type link struct {
	conn *websocket.Conn
	wake chan struct{}
	done chan struct{} // closed when the connection ended: the writer returns
}

// wakeup tells l's writer that pending frames may wait to be written.
func (l *link) wakeup() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// run dials, serves each connection, and waits out the backoff between them.
func (c *Client) run() {
	defer c.wg.Done()
	attempt, refusals := 0, 0
	for {
		conn, err := c.dial()
		code, reason := 1006, ""
		if err == nil {
			l := &link{conn: conn, wake: make(chan struct{}, 1), done: make(chan struct{})}
			c.mu.Lock()
			c.link = l
			c.mu.Unlock()
			written := make(chan struct{})
			go func() { defer close(written); c.writer(l) }()
			err = c.serve(conn)
			close(l.done)
			<-written
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				code, reason = ce.Code, ce.Text
			}
		}
		c.mu.Lock()
		closed, everConn, readyAt, joinErr := c.closed, c.everConn, c.readyAt, c.joinErr
		if code == websocket.CloseMessageTooBig {
			c.failBiggestLocked()
		}
		c.link, c.connected, c.readyAt, c.joinErr = nil, false, time.Time{}, nil
		for _, p := range c.pending {
			p.written = false
		}
		c.mu.Unlock()
		if closed {
			return
		}
		refused := code == websocket.ClosePolicyViolation && readyAt.IsZero()
		if !everConn {
			// The first attempt failed: Dial reports it, as the server's
			// error frame when the join was refused (1008, or 4001 for a ban).
			if joinErr != nil {
				err = joinErr
			}
			c.first <- err
			return
		}
		if !readyAt.IsZero() {
			refusals = 0
			if time.Since(readyAt) >= c.opts.MaxBackoff {
				attempt = 0 // it stayed up: this is a new outage
			}
		}
		if refused {
			refusals++
		}
		final := code == CloseKicked ||
			code == CloseTokenExpired && c.opts.TokenFunc == nil ||
			refused && (c.opts.TokenFunc == nil || refusals >= c.opts.MaxRefusals)
		if final {
			ce := &CloseError{Code: code, Reason: reason}
			if refused && joinErr != nil {
				ce.Reason += ": " + joinErr.Reason
			}
			c.disconnected(DisconnectInfo{Code: code, Reason: reason, Err: err})
			c.shut(ce)
			return
		}
		ceiling := min(c.opts.MaxBackoff, c.opts.MinBackoff<<min(attempt, 30))
		delay := time.Duration(jitter(int64(ceiling)))
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

// failBiggestLocked answers a 1009 close (a frame over the server's
// websocket.max_message_bytes): the largest frame written on the connection
// fails with too_big, else it would close every next connection too.
func (c *Client) failBiggestLocked() {
	worst := ""
	for _, ref := range c.order {
		if p := c.pending[ref]; p.written && (worst == "" || len(p.frame) > len(c.pending[worst].frame)) {
			worst = ref
		}
	}
	if worst != "" {
		c.settleLocked(worst, result{err: &Error{Code: "too_big", Reason: "the server closed the connection with 1009: the frame is over its websocket.max_message_bytes", Ref: worst}})
	}
}

func (c *Client) disconnected(info DisconnectInfo) {
	if f := c.opts.OnDisconnect; f != nil {
		c.callback(func() { f(info) })
	}
}

// callback queues f for the callback goroutine.
func (c *Client) callback(f func()) {
	c.mu.Lock()
	c.callbacks = append(c.callbacks, f)
	c.wakeCallbacks()
	c.mu.Unlock()
}

func (c *Client) wakeCallbacks() {
	select {
	case c.cbWake <- struct{}{}:
	default:
	}
}

// runCallbacks calls OnConnect and OnDisconnect, in order, off the network
// goroutines, until the client is closed and nothing is queued. Close does
// not wait for it, so that a callback may call Close.
func (c *Client) runCallbacks() {
	for {
		c.mu.Lock()
		q, closed := c.callbacks, c.closed
		c.callbacks = nil
		c.mu.Unlock()
		for _, f := range q {
			f()
		}
		if len(q) > 0 {
			continue
		}
		if closed {
			return
		}
		<-c.cbWake
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
	closed := c.closed
	c.mu.Unlock()
	if closed {
		_ = conn.Close()
		return nil, ErrClosed
	}
	return conn, nil
}

// serve reads conn's frames until it ends, and returns why. It is conn's
// only reader; the writer is link's goroutine (pongs and the close frame are
// control frames, which gorilla lets any goroutine write).
func (c *Client) serve(conn *websocket.Conn) error {
	defer conn.Close()
	c.mu.Lock()
	closed := c.closed // shut may have run before c.link was set: it closed no connection
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
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

// writer writes l's pending frames, in send order, each once per
// connection, until l ends. It takes c.mu only to pick the frames: no lock is
// held across a network write, so a slow write stalls neither the reader
// nor Send.
func (c *Client) writer(l *link) {
	var batch [][]byte
	for {
		select {
		case <-l.wake:
		case <-l.done:
			return
		}
		for {
			batch = batch[:0]
			c.mu.Lock()
			if c.link == l && c.connected {
				for _, ref := range c.order {
					if p := c.pending[ref]; !p.written {
						p.written = true
						batch = append(batch, p.frame)
					}
				}
			}
			c.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			for _, b := range batch {
				_ = l.conn.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
				if err := l.conn.WriteMessage(websocket.TextMessage, b); err != nil {
					_ = l.conn.Close() // the reader ends, and run reconnects
					return
				}
			}
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
		} else if !c.connected {
			c.joinErr = &Error{Code: ev.Code, Reason: ev.Reason} // a refused join: a 1008 close follows
		}
		c.emitLocked(ev)
		c.mu.Unlock()
		return
	case TypeDelete:
		c.mu.Lock()
		c.forgetLocked(ev.ID)
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
		c.keptKinds[e.Type] = true // the server keeps this kind
		if c.freshLocked(e.ID) {
			fresh = append(fresh, e)
			c.rememberKeptLocked(e.ID)
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
	c.connected, c.everConn, c.readyAt = true, true, time.Now()
	c.link.wakeup() // the frames that wait for their ack go (again)
	c.mu.Unlock()
	if first {
		c.first <- nil
	}
	if f := c.opts.OnConnect; f != nil {
		c.callback(func() { f(info) })
	}
}

func (c *Client) settleLocked(ref string, r result) {
	p, ok := c.pending[ref]
	if !ok {
		return
	}
	delete(c.pending, ref)
	if i := slices.Index(c.order, ref); i >= 0 {
		c.order = slices.Delete(c.order, i, i+1)
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

// keepLocked moves ?since= to a live envelope the server is believed to
// keep (the rule is LastID's).
func (c *Client) keepLocked(ev Event) {
	if ev.ID == "" || ev.To != "" || ev.ClientID == 0 && ev.Username == "system" || !c.keptKinds[ev.Type] {
		return
	}
	c.lastID = ev.ID
	c.rememberKeptLocked(ev.ID)
}

func (c *Client) rememberKeptLocked(id string) {
	if id == "" {
		return
	}
	c.kept = append(c.kept, id)
	if len(c.kept) > c.opts.Dedupe {
		c.kept = c.kept[1:]
	}
}

// forgetLocked drops a deleted id; when it was ?since=, the kept id before
// it takes its place (the server's history no longer holds the deleted one).
func (c *Client) forgetLocked(id string) {
	c.kept = slices.DeleteFunc(c.kept, func(k string) bool { return k == id })
	if c.lastID == id && len(c.kept) > 0 {
		c.lastID = c.kept[len(c.kept)-1]
	}
}

// emitLocked queues ev for Events: dropped when EventBuffer is negative, the
// oldest queued dropped when the queue is full.
func (c *Client) emitLocked(ev Event) {
	if c.opts.EventBuffer < 0 {
		return
	}
	if len(c.queue) >= c.opts.EventBuffer {
		c.queue[0] = Event{}
		c.queue = c.queue[1:]
		c.dropped++
	}
	c.queue = append(c.queue, ev)
	c.notifyLocked()
}

func (c *Client) notifyLocked() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// pump moves queued events to the Events channel one at a time, so that the
// reader never waits for the consumer and the queue stays bounded. Once the
// client is closed it closes Events: at once after Close, after the queue is
// drained after a final close by the server.
func (c *Client) pump() {
	defer c.wg.Done()
	defer close(c.events)
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			ev := c.queue[0]
			c.queue[0] = Event{}
			c.queue = c.queue[1:]
			c.mu.Unlock()
			select {
			case c.events <- ev:
			case <-c.stop:
				return
			}
			continue
		}
		closed := c.closed
		c.mu.Unlock()
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
