package server

import (
	"errors"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/pkg/pipeline"
)

// Close codes the server sends (RFC 6455 §7.4.1).
const (
	closeGoingAway     = websocket.CloseGoingAway       // 1001: server shutting down
	closePolicy        = websocket.ClosePolicyViolation // 1008: send queue overflow, refused join
	closeTooBig        = websocket.CloseMessageTooBig   // 1009: frame over max_message_bytes
	closeUnsupported   = websocket.CloseUnsupportedData // 1003: binary frame, when so configured
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
}

// client is one WebSocket connection. It implements pipeline.Sender.
//
// Exactly one goroutine reads (runConn's, started by serveWS) and exactly one
// writes (writeLoop); everyone else only appends to the queue under mu, which
// never blocks. A full queue means the client fell behind: it is closed with
// 1008 and the rest of the room is unaffected.
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
	// present is set while the client is listed in cluster presence.
	present atomic.Bool

	mu        sync.Mutex
	queue     []queued
	spare     []queued // the other half of the double buffer writeLoop swaps
	closing   bool
	closeCode int
	closeText string
	username  string
	values    map[any]any
	// histSeen holds the ids of the history frame until the first live
	// kept frame newer than the history arrives: a message appended to
	// history before the history was read but delivered after it is
	// dropped, not sent twice. (Kept frames arrive in history order, so once
	// a newer one came, no older one can follow. Frames that are not kept —
	// online, offline — prove nothing: they are never in the history.)
	histSeen map[string]struct{}

	wake chan struct{} // capacity 1: "the queue or closing changed"
	done chan struct{} // closed when writeLoop returns
}

// enqueue appends a frame for the writer. It never blocks.
func (c *client) enqueue(q queued) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return errClientClosed
	}
	if c.histSeen != nil && q.id != "" {
		if _, dup := c.histSeen[q.id]; dup {
			c.mu.Unlock()
			return nil
		}
		if q.kept {
			c.histSeen = nil
		}
	}
	if len(c.queue) >= c.srv.cfg.WebSocket.SendQueue {
		c.closing, c.closeCode, c.closeText = true, closePolicy, "send queue full: client too slow"
		c.mu.Unlock()
		c.srv.metrics.Dropped.WithLabelValues("slow").Inc()
		c.srv.log.Warn("disconnecting slow client", "client_id", c.id, "room", c.room)
		c.signal()
		return errClientSlow
	}
	c.queue = append(c.queue, q)
	c.mu.Unlock()
	c.signal()
	return nil
}

func (c *client) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// close asks the writer to flush what is queued, send a close frame with code
// and text, and close the connection. The first close wins.
func (c *client) close(code int, text string) {
	c.mu.Lock()
	if !c.closing {
		c.closing, c.closeCode, c.closeText = true, code, text
	}
	c.mu.Unlock()
	c.signal()
}

// writeLoop is the connection's only writer. It returns after the connection
// is closed; serveWS waits for it.
func (c *client) writeLoop(stop <-chan struct{}) {
	defer close(c.done)
	defer c.bc.Close() // ends the reader too
	defer func() {
		// Whatever ended the writer, later deliveries are refused at once
		// rather than queued for nobody (and counted as a slow client).
		c.mu.Lock()
		c.closing, c.queue = true, nil
		c.mu.Unlock()
	}()
	ws := c.srv.cfg.WebSocket
	ping := time.NewTicker(ws.PingInterval)
	defer ping.Stop()
	var lastWrite time.Time
	for {
		select {
		case <-c.wake:
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(ws.WriteTimeout)); err != nil {
				return
			}
			continue
		case <-stop:
			c.close(closeGoingAway, "server shutting down")
			stop = nil // seen; the close is now queued
			continue
		}
		if fc := c.srv.flush; fc != nil && time.Since(lastWrite) < fc.period {
			// A busy client: let more frames join this write (see
			// flushClock). A quiet one (nothing written for a period) is
			// written to at once: no added latency, no second wake-up.
			select {
			case <-fc.next():
			case <-stop:
			}
			select { // what woke us is about to be written
			case <-c.wake:
			default:
			}
		}
		c.mu.Lock()
		batch := c.queue
		c.queue, c.spare = c.spare[:0], nil
		closing, code, text := c.closing, c.closeCode, c.closeText
		c.mu.Unlock()

		if len(batch) > 0 {
			lastWrite = time.Now()
			err := c.writeBatch(batch)
			clear(batch) // drop references to the prepared messages
			if cap(batch) > maxSpare {
				batch = nil // a burst's queue is not kept by an idle client
			}
			c.mu.Lock()
			c.spare = batch[:0]
			c.mu.Unlock()
			if err != nil {
				return
			}
		}
		if closing {
			_ = c.ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(code, text), time.Now().Add(closeControlWindow))
			return
		}
	}
}

// writeBatch writes frames in one flush to the network. Uncompressed frames
// are copied into the batch as encoded once for everyone; a client that
// negotiated compression goes through gorilla with the shared compressed form.
func (c *client) writeBatch(batch []queued) error {
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
