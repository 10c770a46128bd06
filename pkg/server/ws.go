package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/chatserver/chatserver/pkg/history"
	"github.com/chatserver/chatserver/pkg/pipeline"
)

// appendHistoryFrame appends the first frame a client receives:
// {"type":"history","room":…,"messages":[…],"complete":…}. complete is
// present only when the client asked for ?since= (nil otherwise): false
// means the id it gave was no longer in the history, so there may be a gap
// before the messages. The entries are the valid JSON frames that were
// broadcast (history.Valid) and go in byte for byte; room is a valid room
// name, plain ASCII (ValidRoom). So the frame is written as is, not encoded:
// a join would otherwise validate and copy its whole history twice.
func appendHistoryFrame(b []byte, room string, entries []history.Entry, complete *bool) []byte {
	b = append(b, `{"type":"`+pipeline.TypeHistory+`","room":"`...)
	b = append(b, room...)
	b = append(b, `","messages":[`...)
	for i, e := range entries {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e.Frame...)
	}
	b = append(b, ']')
	if complete != nil {
		b = strconv.AppendBool(append(b, `,"complete":`...), *complete)
	}
	return append(b, '}')
}

// serveWS upgrades the request, sends history and runs the join, then hands
// the connection to a reader goroutine of its own (runConn) and returns: the
// HTTP server's per-connection state (buffers, request, its deep handler
// stack) is released instead of being held for the connection's lifetime,
// which is most of what an idle connection would otherwise cost.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	// What gorilla's Upgrade would refuse is refused before the request costs
	// a limit slot, a room or a (clustered) subscription.
	switch {
	case r.Method != http.MethodGet || !websocket.IsWebSocketUpgrade(r):
		http.Error(w, "this is the WebSocket endpoint: open it with a WebSocket handshake", http.StatusBadRequest)
		return
	case !s.upgrader.CheckOrigin(r):
		http.Error(w, "origin not allowed (server.allowed_origins)", http.StatusForbidden)
		return
	}
	roomName := r.URL.Query().Get("room")
	if roomName == "" {
		roomName = DefaultRoom
	}
	if !ValidRoom(roomName) {
		http.Error(w, "invalid room name: want 1-64 characters of A-Z a-z 0-9 _ . -", http.StatusBadRequest)
		return
	}
	release, ok := s.admit(w, r, roomName)
	if !ok {
		return // refused by a limit, already answered (429/503)
	}
	// The slot belongs to the connection, which outlives this handler: it is
	// released here only if the connection never starts, else by runConn.
	started := false
	defer func() {
		if !started {
			release()
		}
	}()
	if !s.track() {
		http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
		return
	}

	c := newClient(s, s.nextClientID(), roomName)
	c.remote, c.rawQuery, c.cookie = r.RemoteAddr, r.URL.RawQuery, r.Header.Get("Cookie")
	// Join the room before the handshake completes: a client that has its
	// 101 receives every frame published after it (they wait in its queue
	// until the writer starts), and the history read below covers what came
	// before; frames queued meanwhile that the history holds are dropped.
	s.hub.join(c)
	if sw, ok := s.broker.(subscriptionWaiter); ok {
		// A clustered broker subscribes asynchronously: wait (bounded) so
		// that live delivery starts before the history read and the 101.
		wctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		if err := sw.WaitSubscribed(wctx, roomName); err != nil {
			s.log.Warn("room subscription not confirmed in time", "room", roomName, "err", err)
		}
		cancel()
	}

	hj := &hijacker{ResponseWriter: w, idleReader: s.cfg.FastPaths.IdleReader}
	ws, err := s.upgrader.Upgrade(hj, r, nil)
	if err != nil {
		s.hub.leave(c)
		s.conns.Done()
		return // Upgrade already answered with an HTTP error
	}
	c.mu.Lock() // shutdown's cutAll may look at bc from now on
	c.ws, c.bc = ws, hj.conn
	c.mu.Unlock()
	s.metrics.Connections.Inc()
	s.metrics.ConnectionsTotal.Inc()

	ws.SetReadLimit(s.cfg.WebSocket.MaxMessageBytes)
	c.heard()
	ws.SetPongHandler(func(string) error { c.heard(); return nil }) // pongs gorilla reads; see readable

	// The join pipeline decides before anything of the room leaves the
	// server: frames that reach c meanwhile wait in its queue, which no
	// writer reads until start, and a refused joiner's queue is discarded.
	// Its own online (the join's broadcast) waits there too, behind the
	// history frame that sendHistory puts at the head.
	// The connection outlives the request: its events get a context of
	// their own (the request's is cancelled, and its values recycled, when
	// this handler returns).
	ctx := context.Background()
	ev, err := s.runEvent(ctx, c, pipeline.Join, pipeline.Inbound{})
	if err == nil {
		err = s.admitJoin(ctx, c) // a join pipeline without broadcast publishes no online to check (bans.go)
	}
	if err != nil {
		s.leaveRoom(c) // no more deliveries; then what came meanwhile goes
		c.discard()
		s.replyError(c, pipeline.AsError(err), "")
		c.close(joinRefusalClose(err)) // 1008, or 4001 for a ban (bans.go)
		c.start()
		started = true
		go s.runConn(c, time.Time{}, release)
		return
	}
	c.present.Store(true)
	s.present(c)
	if err := s.sendHistory(r.Context(), c, r.URL.Query().Get("since")); err != nil {
		s.log.Error("reading history for a new client", "room", roomName, "err", err)
	}
	c.start()
	started = true
	go s.runConn(c, ev.ExpiresAt, release)
}

// runConn is the connection's reader: the read loop, then leave (see
// readConn). It gives back the connection's slot in the per-address limit
// (release) at the end. A client that is not present was refused at join and
// is closing: it only waits for its writer. A non-zero expires is when the
// identity the client proved runs out: it is closed then (4002).
func (s *Server) runConn(c *client, expires time.Time, release func()) {
	c.release = release
	c.joined = c.present.Load()
	if c.joined {
		c.stopExpiry = s.expireAt(c, expires)
		c.bc.resume = func() { go s.readConn(c) }
	}
	s.readConn(c)
}

// readConn is one stint of the connection's reader: it reads until the
// connection ends and then ends it — leaves the room, runs the leave
// pipeline, waits for the writer — or, with the idle poller, until the
// client has nothing more to say: it then parks the connection and returns,
// and the poller starts the next stint when the socket is readable (or
// closed; see batchConn.wake).
func (s *Server) readConn(c *client) {
	ctx := context.Background() // the connection outlives the request; see serveWS
	handed := false             // the connection went to the next stint (see park)
	defer func() {
		// Plugin panics are caught per event; this catches our own, which
		// would otherwise take the whole process down (this goroutine
		// outlives the HTTP handler and its Recoverer). The connection goes.
		if v := recover(); v != nil {
			if handed { // the connection is another stint's now
				s.log.Error("connection goroutine panicked while parking", "client_id", c.id, "panic", v, "stack", string(debug.Stack()))
				return
			}
			s.log.Error("connection goroutine panicked; closing the connection", "client_id", c.id, "panic", v, "stack", string(debug.Stack()))
			// The writer's deadline bounds the close; the leave pipeline is
			// skipped: it might be what panicked.
			c.close(websocket.CloseInternalServerErr, "internal error")
			s.leaveRoom(c)
			c.readerDone()
			<-c.done
			s.endConn(c)
		}
	}()
	if c.joined {
		if s.readLoop(ctx, c, &handed) {
			return // parked: the connection goes on
		}
		c.stopExpiry()
	} else {
		drainClose(c)
	}
	c.readerDone()

	s.leaveRoom(c)
	if c.joined {
		s.leave(ctx, c)
	}
	c.close(websocket.CloseNormalClosure, "")
	<-c.done
	s.endConn(c)
}

// endConn is the last of a connection, once its reader and writer are done.
func (s *Server) endConn(c *client) {
	if c.bc.pollKey != 0 { // it parked, so the poller exists
		s.idlePoller().forget(c.bc)
	}
	s.metrics.Connections.Dec()
	c.release()
	s.conns.Done()
}

// park hands c's socket to the idle poller, if there is one, and reports
// whether it did: c's reader is then to return without touching c again
// (the next stint may have started already). *handed says so meanwhile, for
// readConn's recover. A socket the poller refuses (closed meanwhile) stays
// with the reader, which reads on.
func (s *Server) park(c *client, handed *bool) bool {
	p := s.idlePoller()
	if p == nil {
		return false
	}
	p.register(c.bc)
	*handed = true
	c.bc.parked.Store(true)
	if err := p.arm(c.bc); err != nil {
		// Closed under us (wake started the next stint, or will find
		// nothing parked), or epoll refused: read on, blocking.
		if !c.bc.parked.CompareAndSwap(true, false) {
			return true
		}
		*handed = false
		if !errors.Is(err, net.ErrClosed) && !errors.Is(err, errPollerClosed) && s.armFailed.CompareAndSwap(false, true) {
			s.log.Warn("idle poller refused a connection; it keeps its goroutine (logged once)", "err", err)
		}
		return false
	}
	// A ping that found c idle while it was still parking woke nobody:
	// look again, or the close would wait for the next ping.
	if c.idle() && c.bc.parked.CompareAndSwap(true, false) {
		*handed = false
		return false
	}
	return true
}

// expireAt closes c with 4002 at expires (its token's exp), unless the
// returned stop is called first. Zero: never. (Out of runConn, as leave is,
// to keep the idle reader's stack small: see onFrame.)
//
//go:noinline
func (s *Server) expireAt(c *client, expires time.Time) (stop func() bool) {
	if expires.IsZero() {
		return func() bool { return false }
	}
	t := time.AfterFunc(time.Until(expires), func() {
		s.metrics.Dropped.WithLabelValues("expired").Inc()
		c.close(closeExpired, "token expired")
	})
	return t.Stop
}

// leave runs the leave pipeline for c.
//
//go:noinline
func (s *Server) leave(ctx context.Context, c *client) {
	_, _ = s.runEvent(ctx, c, pipeline.Leave, pipeline.Inbound{})
}

// drainClose reads what a refused joiner sends until it answers the close
// frame its writer sends (or closeControlWindow passes), so that the socket
// is not closed under a frame of the client's still in flight: some clients
// (Node's WebSocket) then report 1006 instead of the close code.
func drainClose(c *client) {
	_ = c.ws.SetReadDeadline(time.Now().Add(2 * closeControlWindow))
	for {
		if _, _, err := c.ws.ReadMessage(); err != nil {
			return
		}
	}
}

// leaveRoom takes c out of its room here and in cluster presence. It may run
// twice for one client (a panic after it): both steps are idempotent.
func (s *Server) leaveRoom(c *client) {
	s.hub.leave(c)
	if c.present.Swap(false) && s.presence != nil {
		s.presence.Remove(c.room, c.id)
	}
}

// sendHistory puts the history frame at the head of c's queue, dropping live
// frames that arrived since c joined and that the history already contains.
// When the history cannot be read (Redis unreachable) the frame is empty and
// says "complete": false.
func (s *Server) sendHistory(ctx context.Context, c *client, since string) error {
	entries, err := s.store.Recent(ctx, c.room, 0)
	var complete *bool
	switch {
	case err != nil:
		// Redis unreachable: the frame is empty, and says it may not be
		// all there is.
		complete = new(false)
	case since != "":
		var found bool
		entries, found = history.Since(entries, since)
		complete = &found
	}
	entries, bad := history.Valid(entries)
	if bad > 0 {
		s.log.Warn("history: skipped entries that are not JSON", "room", c.room, "count", bad)
	}
	seen := make(map[string]struct{}, len(entries))
	for _, e := range entries {
		seen[e.ID] = struct{}{}
	}
	b := appendHistoryFrame(nil, c.room, entries, complete)
	c.mu.Lock()
	arrived := c.queue
	c.queue = append(make([]queued, 0, len(arrived)+1), queued{f: newOutFrame(b)})
	c.others = 1   // the history frame
	newer := false // a kept frame the history lacks arrived: later ones are newer still
	for _, q := range arrived {
		if _, dup := seen[q.id]; dup && q.id != "" {
			continue
		}
		c.queue = append(c.queue, q)
		if !q.presence {
			c.others++
		}
		newer = newer || q.kept && q.id != ""
	}
	if !newer && len(entries) > 0 {
		c.histSeen = tailIDs(entries, histTail) // deliveries still in flight may repeat history
	}
	c.mu.Unlock()
	return err
}

// histTail is how many of the newest history ids a joining client keeps to
// drop live deliveries that repeat them (client.histSeen). Only messages
// published while it joined can be in flight, and they are the newest in the
// history; keeping all of a room's 100 ids would cost an idle member ~3.5 KB
// until the room's next message.
const histTail = 32

// tailIDs returns the ids of the last n entries.
func tailIDs(entries []history.Entry, n int) []string {
	ids := make([]string, 0, min(n, len(entries)))
	for _, e := range entries[max(0, len(entries)-n):] {
		ids = append(ids, e.ID)
	}
	return ids
}

// readLoop reads frames until the connection ends and runs each through the
// pipeline of its kind. Bad input is answered with an error frame and the
// connection stays open, except for frames over the size limit (1009).
// With the idle poller it returns true when it parked the connection: the
// client had nothing more to say (see readConn).
func (s *Server) readLoop(ctx context.Context, c *client, handed *bool) (parked bool) {
	wait := !s.pollerOn
	for {
		err := c.bc.readable(c.heard, c.pinged, wait)
		if errors.Is(err, errIdle) {
			if c.idle() {
				err = os.ErrDeadlineExceeded // woken by a ping (client.ping): idle too long
			} else if s.park(c, handed) {
				return true
			} else {
				wait = true // the poller refused: wait here for the rest of this stint
				continue
			}
		}
		var mt int
		var data []byte
		if err == nil {
			mt, data, err = c.ws.ReadMessage()
		}
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, websocket.ErrReadLimit):
				// gorilla has already sent the 1009 close frame.
				s.metrics.Dropped.WithLabelValues("too_big").Inc()
			case errors.As(err, &ne) && ne.Timeout():
				// No frame and no pong within ping_interval + write_timeout.
				s.metrics.Dropped.WithLabelValues("idle").Inc()
			}
			return false
		}
		c.heard()
		if mt == websocket.BinaryMessage && s.cfg.WebSocket.BinaryFrames == "close" {
			s.metrics.Dropped.WithLabelValues("binary").Inc()
			c.close(closeUnsupported, "binary frames are not supported")
			return false
		}
		s.onFrame(ctx, c, mt, data)
	}
}

// onFrame decodes one frame and answers it. It is kept out of readLoop (and
// out of line): what handling a frame needs on the stack — the decoded
// frame, the event — must not be in the frame of the loop an idle reader
// parks in. An idle connection's goroutine then fits its 2 KB starting
// stack; a few hundred bytes more in readLoop or runConn double it, ~2 KB
// per idle connection (BenchmarkIdleConnections shows it).
//
//go:noinline
func (s *Server) onFrame(ctx context.Context, c *client, mt int, data []byte) {
	in, perr := decodeInbound(mt, data)
	if perr != nil {
		s.metrics.EventsIn.WithLabelValues(string(pipeline.Message), "rejected").Inc()
		s.replyError(c, perr, in.Ref)
		return
	}
	s.handleFrame(ctx, c, in)
}

// maxRefLen bounds a ref: the client's name for a frame, not a payload.
const maxRefLen = 64

// decodeInbound decodes and validates one inbound frame of type mt. It is
// pure (no I/O, no server state) so that it can be fuzzed on its own; the
// rejection it returns is what the sender is told. When the frame is
// rejected, the Inbound still carries its ref if that was readable, so the
// error can name the frame it answers.
//
// It is strict where encoding/json is lenient: a field that is not one of
// type, body, username, data, to and ref is an error, names match exactly
// (encoding/json would take "TO" for "to") and a field may not appear twice
// (encoding/json keeps the last) — a client that believes it sent a private
// `to` must never have the frame broadcast. A null field is an absent one.
func decodeInbound(mt int, data []byte) (pipeline.Inbound, *pipeline.Error) {
	var in pipeline.Inbound
	if mt != websocket.TextMessage {
		return in, pipeline.Reject(pipeline.CodeInvalidJSON, "binary frames are not supported: send JSON text frames")
	}
	if !utf8.Valid(data) {
		return in, pipeline.Reject(pipeline.CodeInvalidJSON, "frame is not valid UTF-8")
	}
	if err := decodeFields(data, &in); err != nil {
		ref := refOnly(data)
		return pipeline.Inbound{Ref: ref}, pipeline.Reject(pipeline.CodeInvalidJSON, `want {"body": "…"}: %s`, err)
	}
	return in, nil
}

// decodeFields reads the one JSON object of data into in.
func decodeFields(data []byte, in *pipeline.Inbound) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errors.New("a frame is a JSON object")
	}
	var seen [6]bool
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return jsonProblem(err)
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return jsonProblem(err)
		}
		i := slices.Index(inboundFields, key)
		switch {
		case i < 0:
			return fmt.Errorf("unknown field %q (known: %s)", key, strings.Join(inboundFields, ", "))
		case seen[i]:
			return fmt.Errorf("field %q appears twice", key)
		}
		seen[i] = true
		if string(raw) == "null" {
			continue
		}
		if key == "data" {
			if raw[0] != '{' {
				return errors.New("field data must be a JSON object")
			}
			in.Data = raw
			continue
		}
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("field %s must be a string", key)
		}
		switch key {
		case "type":
			in.Type = v
		case "body":
			in.Body = v
		case "username":
			in.Username = &v
		case "to":
			if strings.TrimSpace(v) == "" {
				return errors.New("field to must name a member of the room")
			}
			in.To = v
		case "ref":
			if !validRef(v) {
				return fmt.Errorf("field ref must be 1-%d printable ASCII characters", maxRefLen)
			}
			in.Ref = v
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return jsonProblem(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("one JSON object per frame, then nothing")
	}
	return nil
}

// inboundFields are the fields of an inbound frame, in the order errors list them.
var inboundFields = []string{"type", "body", "username", "data", "to", "ref"}

// refOnly reads just the ref of a frame that failed to decode, so that the
// error can carry it; "" when there is none or it is not valid.
func refOnly(data []byte) string {
	var r map[string]json.RawMessage
	var ref string
	if json.Unmarshal(data, &r) != nil || json.Unmarshal(r["ref"], &ref) != nil || !validRef(ref) {
		return ""
	}
	return ref
}

// validRef reports whether ref is 1-64 printable ASCII characters.
func validRef(ref string) bool {
	if ref == "" || len(ref) > maxRefLen {
		return false
	}
	for i := 0; i < len(ref); i++ {
		if ref[i] < 0x20 || ref[i] > 0x7e {
			return false
		}
	}
	return true
}

// jsonProblem says what is wrong with a frame without echoing it back.
func jsonProblem(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("not valid JSON at byte %d: %v", se.Offset, se)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return errors.New("the JSON object is cut short")
	}
	return err
}

// handleFrame runs one decoded frame of c's (see runFrame) and answers it:
// an error, or, when it had a ref, an ack.
func (s *Server) handleFrame(ctx context.Context, c *client, in pipeline.Inbound) {
	o := s.runFrame(ctx, c.room, s.refName(c, in), in, func(kind pipeline.Kind) (*pipeline.Event, error) {
		return s.runEvent(ctx, c, kind, in)
	})
	switch {
	case o.err != nil:
		s.replyError(c, pipeline.AsError(o.err), in.Ref)
	case in.Ref != "":
		s.replyAck(c, in.Ref, o.id)
	case o.late != nil: // no ref to ack: say what failed, as for any frame
		s.replyError(c, pipeline.AsError(o.late), "")
	}
}

// refName is the name c's frame in is remembered under for resends: the
// proven name where the join guards (a frame's username is ignored there,
// and must not let anyone claim another's refs); in plain mode the name the
// frame asks for, if any — a resend is the same frame, whatever name the
// connection went by when it was first sent — else the connection's.
func (s *Server) refName(c *client, in pipeline.Inbound) string {
	if !s.pipelines.Load().Guarded() && in.Username != nil && strings.TrimSpace(*in.Username) != "" {
		return *in.Username
	}
	return c.Username()
}

// runEvent builds an event of kind for c and runs it through the current
// pipelines. It returns the event and what the pipeline returned; the
// caller tells the client.
func (s *Server) runEvent(ctx context.Context, c *client, kind pipeline.Kind, in pipeline.Inbound) (*pipeline.Event, error) {
	ev := pipeline.NewEvent(kind, c, in)
	s.quietIfCrowded(ev, c, kind)

	err := s.pipelines.Load().Run(ctx, ev)
	if err == nil {
		s.metrics.EventsIn.WithLabelValues(string(kind), "ok").Inc()
		return ev, nil
	}
	pe := pipeline.AsError(err)
	outcome := "rejected"
	if pe.Code == pipeline.CodeInternal {
		outcome = "error"
		s.log.Error("pipeline failed", "pipeline", string(kind), "client_id", c.id, "room", c.room, "err", err)
	}
	s.metrics.EventsIn.WithLabelValues(string(kind), outcome).Inc()
	return ev, err
}

// replyError sends an error frame to c alone; ref is the ref of the frame
// it answers, if any.
func (s *Server) replyError(c *client, e *pipeline.Error, ref string) {
	b, err := json.Marshal(pipeline.ErrorFrame{Type: pipeline.TypeError, Code: e.Code, Reason: e.Reason, Ref: ref})
	if err == nil {
		_ = c.sendFrame(b)
	}
}

// replyAck acknowledges the frame ref to c alone, with the id of the
// envelope it produced ("" for none).
func (s *Server) replyAck(c *client, ref, id string) {
	b, err := json.Marshal(pipeline.AckFrame{Type: pipeline.TypeAck, Ref: ref, ID: id})
	if err == nil {
		_ = c.sendFrame(b)
	}
}
