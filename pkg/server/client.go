package server

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// Close codes the server sends (RFC 6455 §7.4.1); gorilla sends 1009 itself.
const (
	closeGoingAway     = websocket.CloseGoingAway       // 1001: server shutting down
	closePolicy        = websocket.ClosePolicyViolation // 1008: send queue overflow, refused join
	closeUnsupported   = websocket.CloseUnsupportedData // 1003: binary frame, when so configured
	closeExpired       = 4002                           // the token the client joined with expired
	closeControlWindow = time.Second                    // how long a close frame may take
)

// maxSpare is the largest queue capacity a writer keeps for reuse.
const maxSpare = 64

var (
	errClientClosed = errors.New("client is closed")
	errClientSlow   = errors.New("client send queue is full; disconnecting it")
)

// queued is one frame waiting in a client's queue. The id lets a joining
// client drop live frames that its history frame already holds.
type queued struct {
	id   string
	f    *outFrame
	kept bool // the frame is in the room's history (see broker.DeliverFunc)
	// presence marks an online/offline frame, which has its own allowance
	// in the queue (see enqueue).
	presence bool
}

// client is one WebSocket connection. It implements pipeline.Sender.
//
// At most one goroutine reads (a stint of the reader: runConn's, started by
// serveWS, then, with the idle poller, one per wake-up; see readConn) and at
// most one writes (writeLoop); everyone else only appends to the queue under mu, which
// never blocks. A full queue means the client fell behind: it is closed with
// 1008 and the rest of the room is unaffected.
//
// The writer runs only while there is something to write: enqueue starts it
// (kick) and it returns after a short linger without work. A chat connection
// is idle most of its life, and a parked writer would cost it a goroutine
// stack, half of what an idle connection costs (BENCHMARKS.md).
type client struct {
	srv      *Server
	id       int64
	room     string
	ws       *websocket.Conn
	bc       *batchConn
	remote   string
	rawQuery string // the handshake's query, parsed on demand (plugins rarely ask)
	cookie   string // the raw Cookie header of the handshake
	slot     int    // index in room.members, guarded by the room's lock
	// present is set once the client's join was accepted, until it leaves:
	// only then is it a member to others (members lists, cluster presence).
	present atomic.Bool
	// lastWrite is when the writer last wrote frames, multi whether that
	// write carried more than one, and behind whether the one before it
	// did too (see pace). Only the writer uses them; successive writers
	// are ordered by mu (writing).
	lastWrite     time.Time
	multi, behind bool

	mu        sync.Mutex
	queue     []queued
	others    int      // frames in queue that are not presence
	spare     []queued // the other half of the double buffer writeLoop swaps
	closing   bool
	closeCode int
	closeText string
	// canWrite is set once the 101 is written and the history frame heads
	// the queue (start); writing while a writeLoop runs; finished once it
	// closed the connection (finish), after which no writer starts.
	canWrite, writing, finished bool
	// readerGone is set once the reader stopped reading (readerDone): after
	// a close frame, the writer closes the socket then, or after
	// closeControlWindow.
	readerGone bool
	pingDue    bool        // the writer is to send a ping
	pinger     *time.Timer // sets pingDue every ping_interval
	username   string
	values     map[any]any
	// histSeen holds the newest ids of the history frame (histTail of them)
	// until the first live kept frame newer than the history arrives: a
	// message appended to history before the history was read but delivered
	// after it is dropped, not sent twice. (Kept frames arrive in history order, so once
	// a newer one came, no older one can follow. Frames that are not kept —
	// online, offline — prove nothing: they are never in the history.)
	histSeen []string

	wake chan struct{} // capacity 1: "the queue or closing changed", to a running writer
	done chan struct{} // closed by finish

	// What the reader keeps between its stints (see Server.readConn).
	joined     bool         // the join was accepted: leaving runs the leave pipeline
	release    func()       // gives back the connection's per-address slot, at its end
	stopExpiry func() bool  // stops expireAt's close
	idleAt     atomic.Int64 // past it (Server.clock), a silent client is idle (heard)
}

// A writer with nothing to write returns after lingerTicks ticks of the
// server's linger clock (period lingerPeriod): a busy client keeps its writer,
// an idle one gives it up within 50-100 ms. The linger clock is not the flush
// clock: idle writers arming that one would move its ticks and shrink the
// batches busy writers make.
const (
	lingerTicks  = 2
	lingerPeriod = 50 * time.Millisecond
)

func newClient(s *Server, id int64, room string) *client {
	return &client{srv: s, id: id, room: room, slot: -1,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// enqueue appends a frame for the writer. It never blocks.
//
// A client is too slow, and is cut off, when websocket.send_queue frames
// wait for it. Presence frames (online/offline) are not counted there: they
// have an allowance of their own, websocket.presence_limit more frames
// (presenceAllowance), so the queue holds at most send_queue frames that are
// not presence and send_queue+presence_limit in all. A join storm sends every member one online frame per
// joiner, up to presence_limit of them, faster than any client reads; a
// member that keeps up with messages is not cut off for presence it could
// not have avoided. (With presence_limit 0, no limit, the allowance is
// defaultPresenceAllowance.)
func (c *client) enqueue(q queued) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return errClientClosed
	}
	if c.histSeen != nil && q.id != "" {
		if slices.Contains(c.histSeen, q.id) {
			c.mu.Unlock()
			return nil
		}
		if q.kept {
			c.histSeen = nil
		}
	}
	sendQueue := c.srv.cfg.WebSocket.SendQueue
	if len(c.queue) >= sendQueue+c.srv.presenceAllowance || !q.presence && c.others >= sendQueue {
		c.closing, c.closeCode, c.closeText = true, closePolicy, "send queue full: client too slow"
		c.kickLocked()
		c.mu.Unlock()
		c.srv.metrics.Dropped.WithLabelValues("slow").Inc()
		c.srv.log.Warn("disconnecting slow client", "client_id", c.id, "room", c.room)
		return errClientSlow
	}
	c.queue = append(c.queue, q)
	if !q.presence {
		c.others++
	}
	c.kickLocked()
	c.mu.Unlock()
	return nil
}

// defaultPresenceAllowance is the presence allowance when presence_limit is
// 0 (see enqueue).
const defaultPresenceAllowance = 1000

// kickLocked gets the queue written: it wakes the running writer or starts
// one. c.mu must be held.
func (c *client) kickLocked() {
	switch {
	case c.writing:
		select {
		case c.wake <- struct{}{}:
		default:
		}
	case c.canWrite && !c.finished:
		c.writing = true
		go c.writeLoop()
	}
}

// start lets writers run, once the handshake is written and the history
// frame heads the queue, and starts the pings.
func (c *client) start() {
	c.mu.Lock()
	c.canWrite = true
	c.pinger = time.AfterFunc(c.srv.cfg.WebSocket.PingInterval, c.ping)
	c.kickLocked()
	c.mu.Unlock()
	select { // joined as shutdown began: Shutdown's closeAll may have missed it
	case <-c.srv.stopping:
		c.close(closeGoingAway, "server shutting down")
	default:
	}
}

// ping has the writer send a ping, and re-arms itself.
func (c *client) ping() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finished {
		return
	}
	c.pingDue = true
	c.kickLocked()
	c.pinger.Reset(c.srv.cfg.WebSocket.PingInterval)
	if c.idle() {
		// A parked reader has no deadline running: it ends an idle
		// client when woken (readConn).
		c.bc.wake()
	}
}

// close asks the writer to flush what is queued, send a close frame with code
// and text, and close the connection. The first close wins.
func (c *client) close(code int, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closing {
		c.closing, c.closeCode, c.closeText = true, code, text
	}
	c.kickLocked()
}

// writeLoop is the connection's only writer while it runs (see kick). It
// writes what is queued — at once, or at the next flush tick when the client
// is behind (see pace) — pings when a ping is due, and returns once the
// connection is closed (see finish) or when the client has had nothing to
// write for lingerTicks ticks of the server's linger clock: an idle
// connection holds no writer goroutine, and so no stack.
func (c *client) writeLoop() {
	fc, linger := c.srv.flush, c.srv.linger
	idleTicks := 0
	for {
		c.mu.Lock()
		if len(c.queue) == 0 && !c.closing && !c.pingDue {
			if idleTicks >= lingerTicks {
				// An idle client keeps no queue either: the next frame
				// allocates a small one.
				c.writing, c.queue, c.spare = false, nil, nil
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
			select {
			case <-c.wake:
			case <-linger.next():
				idleTicks++
			}
			continue
		}
		c.mu.Unlock()
		idleTicks = 0
		c.pace(fc)

		c.mu.Lock()
		batch := c.queue
		c.queue, c.spare, c.others = c.spare[:0], nil, 0
		closing, code, text, ping := c.closing, c.closeCode, c.closeText, c.pingDue
		c.pingDue = false
		c.mu.Unlock()

		if ping {
			if err := c.ws.WriteControl(websocket.PingMessage, nil, c.writeDeadline()); err != nil {
				c.finish()
				return
			}
		}
		if len(batch) > 0 {
			multi := len(batch) > 1
			c.lastWrite, c.behind, c.multi = time.Now(), multi && c.multi, multi
			err := c.writeBatch(batch)
			clear(batch) // drop references to the prepared messages
			if cap(batch) > maxSpare {
				batch = nil // a burst's queue is not kept by an idle client
			}
			c.mu.Lock()
			c.spare = batch[:0]
			c.mu.Unlock()
			if err != nil {
				c.finish()
				return
			}
		}
		if closing {
			_ = c.ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(code, text), time.Now().Add(closeControlWindow))
			c.awaitReader(time.Now().Add(closeControlWindow))
			c.finish()
			return
		}
	}
}

// pace decides when the writer writes what is queued: at once, unless the
// client is behind — its last two writes, the last less than a flush period
// ago, each carried more than one frame: frames arrive faster than one write
// each would keep up with (they queued while it wrote, or while it waited
// for a busy core). A writer that is behind waits for the next tick of the
// flush clock (websocket.write_delay), so that its next write carries every
// frame queued by then (see flushClock). A writer that finds one frame
// writes it at once next time, so a quiet room pays no latency for
// coalescing; a busy one writes once per tick. One write of several frames
// alone does not make a writer wait: in a light room two senders' messages
// sometimes arrive together, and the message after them would wait up to a
// tick for nothing (BENCHMARKS.md, "Light load"). Without a flush clock (write_delay 0) writers never wait:
// each write carries what queued while the writer was busy.
func (c *client) pace(fc *flushClock) {
	if fc == nil || !c.behind || time.Since(c.lastWrite) >= fc.period {
		return
	}
	select {
	case <-fc.next():
	case <-c.srv.stopping:
	}
	select { // what woke us is about to be written
	case <-c.wake:
	default:
	}
}

// readerDone tells the writer that the reader stopped reading: the client
// answered a close frame, went away, or is not read any more.
func (c *client) readerDone() {
	c.mu.Lock()
	c.readerGone = true
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// awaitReader waits, after the writer sent a close frame, until the reader
// has read the client's answer (or stopped reading) or deadline passes. RFC
// 6455 has the server close TCP after the closing handshake: closing it at
// once, while a frame of the client's is still in flight, makes the client's
// stack reset the connection, and some clients (Node's WebSocket) then
// report 1006 instead of the close code — a kicked client would reconnect.
func (c *client) awaitReader(deadline time.Time) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		c.mu.Lock()
		gone := c.readerGone
		c.mu.Unlock()
		if gone {
			return
		}
		select {
		case <-c.wake: // deliveries wake it too: look again
		case <-t.C:
			return
		}
	}
}

// finish ends the connection after its last write: later deliveries are
// refused at once rather than queued for nobody (and counted as a slow
// client), no writer starts again, and the reader's next read fails.
func (c *client) finish() {
	c.mu.Lock()
	c.closing, c.queue, c.spare, c.others = true, nil, nil, 0
	c.writing, c.finished = false, true
	if c.pinger != nil {
		c.pinger.Stop()
	}
	c.mu.Unlock()
	_ = c.bc.Close()
	close(c.done)
}

// writeBatch writes frames in one flush to the network. Uncompressed frames
// are copied into the batch as encoded once for everyone; a client that
// negotiated compression goes through gorilla with the shared compressed form.
// With fast_paths.frame_writer off, gorilla writes each frame (writeEach).
func (c *client) writeBatch(batch []queued) error {
	if !c.srv.cfg.FastPaths.FrameWriter {
		return c.writeEach(batch)
	}
	if !c.bc.deflate {
		c.bc.appendFrames(batch)
		return c.bc.flush(c.writeDeadline())
	}
	c.bc.begin()
	for _, q := range batch {
		pm, err := q.f.prepared()
		if err == nil {
			err = c.ws.WritePreparedMessage(pm)
		}
		if err != nil {
			_ = c.bc.flush(time.Now())
			return err
		}
	}
	return c.bc.flush(c.writeDeadline())
}

// writeEach writes frames the way a plain gorilla server does, one message
// and one write syscall each: what writeBatch stands in for
// (fast_paths.frame_writer: false).
func (c *client) writeEach(batch []queued) error {
	if err := c.ws.SetWriteDeadline(c.writeDeadline()); err != nil {
		return err
	}
	for _, q := range batch {
		var err error
		if c.bc.deflate {
			var pm *websocket.PreparedMessage
			if pm, err = q.f.prepared(); err == nil {
				err = c.ws.WritePreparedMessage(pm)
			}
		} else {
			err = c.ws.WriteMessage(websocket.TextMessage, q.f.payload())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// writeDeadline bounds one batch write: write_timeout normally, and only
// closeControlWindow once the server is shutting down, so that a client that
// stopped reading cannot hold a shutdown for write_timeout.
func (c *client) writeDeadline() time.Time {
	select {
	case <-c.srv.stopping:
		return time.Now().Add(closeControlWindow)
	default:
		return time.Now().Add(c.srv.cfg.WebSocket.WriteTimeout)
	}
}

// sendFrame queues an already encoded envelope to this client alone.
func (c *client) sendFrame(frame []byte) error {
	return c.enqueue(queued{f: newOutFrame(frame)})
}

// discard drops every frame queued so far. A joiner the join pipeline
// refused gets nothing of the room: what reached its queue while it joined
// never leaves the server (no writer has run yet).
func (c *client) discard() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.queue)
	c.queue, c.others = c.queue[:0], 0
}

// heard pushes the read deadline back: the client sent a frame or a pong.
//
// The deadline is kept twice: on the socket, for a reader that waits in its
// goroutine, and in idleAt, for one the idle poller parked (see idle).
func (c *client) heard() {
	now, d := time.Now(), c.srv.idleTimeout()
	c.idleAt.Store(int64(now.Sub(c.srv.epoch) + d))
	_ = c.ws.SetReadDeadline(now.Add(d))
}

// pinged answers a ping the reader took off the socket (readable) as
// gorilla's default ping handler answers one it reads: a pong with the same
// payload, written at once (outside a writer's batch, or appended to it).
// As there, a close already sent or a timeout is no error; any other write
// error ends the connection (the reader returns it).
func (c *client) pinged(payload []byte) error {
	err := c.ws.WriteControl(websocket.PongMessage, payload, time.Now().Add(time.Second))
	var ne net.Error
	if errors.Is(err, websocket.ErrCloseSent) || errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return err
}

// idle reports whether the client's idle deadline (heard) has passed.
func (c *client) idle() bool { return c.srv.clock() > c.idleAt.Load() }

// pipeline.Sender

func (c *client) ID() int64          { return c.id }
func (c *client) Room() string       { return c.room }
func (c *client) RemoteAddr() string { return c.remote }
func (c *client) Query(name string) string {
	q, _ := url.ParseQuery(c.rawQuery)
	return q.Get(name)
}

func (c *client) Username() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.username
}

func (c *client) SetUsername(name string) {
	c.mu.Lock()
	changed := c.username != name
	c.username = name
	c.mu.Unlock()
	if changed && c.present.Load() {
		c.srv.present(c) // a rename: other nodes list the new name
	}
}

func (c *client) Cookie(name string) (string, bool) {
	if c.cookie == "" {
		return "", false
	}
	cookies, err := http.ParseCookie(c.cookie)
	if err != nil {
		// A malformed pair elsewhere in the header must not hide a good one.
		r := http.Request{Header: http.Header{"Cookie": {c.cookie}}}
		cookies = r.Cookies()
	}
	for _, ck := range cookies {
		if ck.Name == name {
			return ck.Value, true
		}
	}
	return "", false
}

func (c *client) Send(frame []byte) error { return c.sendFrame(frame) }

func (c *client) Value(key any) any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.values[key]
}

func (c *client) SetValue(key, value any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.values == nil {
		c.values = map[any]any{}
	}
	c.values[key] = value
}

var _ pipeline.Sender = (*client)(nil)
