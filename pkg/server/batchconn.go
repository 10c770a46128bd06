package server

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// batchConn wraps the connection gorilla hijacks so that a client's writer can
// coalesce every frame queued since it last woke into one write: the shared
// pre-encoded frames are appended to one buffer (appendFrames), and for
// compressing clients gorilla's per-frame writes are collected the same way.
// One syscall per frame and per member would cost more than everything else
// in fan-out (see BENCHMARKS.md).
//
// Outside a batch, writes go straight through, so control frames that gorilla
// writes from the reader goroutine (the 1009 close, close replies) are never
// held back. The mutex keeps such a write from interleaving with a flush.
type batchConn struct {
	net.Conn
	mu       sync.Mutex
	batching bool
	buf      *[]byte
	// deadline is the write deadline last set on Conn; flush moves it only
	// when it would move by more than deadlineSlack, so a busy writer does
	// not re-arm a runtime timer on every batch.
	deadline time.Time
	// upgraded is set by the first write (gorilla's 101 response); deflate
	// says whether that response accepted permessage-deflate.
	upgraded, deflate bool
	// br is the buffer gorilla reads through and raw the socket under Conn
	// (see Hijack and readable); either may be nil.
	br  *bufio.Reader
	raw syscall.RawConn
	// parked is set while the connection's reader has no goroutine: its
	// socket is armed in the idle poller (see readConn), which calls wake
	// when it is readable, as Close does. Whoever clears it starts the
	// next reader (resume). pollKey is the socket's key in the poller,
	// set by the reader when it first parks.
	parked  atomic.Bool
	resume  func()
	pollKey uint64
}

// errIdle: the client has sent nothing (readable, without waiting).
var errIdle = errors.New("websocket: nothing to read")

// errPollerClosed: the idle poller was closed (Shutdown) or failed.
var errPollerClosed = errors.New("idle poller: closed")

// Close closes the connection and wakes a parked reader: its socket left
// the poller's epoll set with the close, and the reader must see the close
// to end the connection.
func (b *batchConn) Close() error {
	err := b.Conn.Close()
	b.wake()
	return err
}

// wake starts the reader of a parked connection (see parked).
func (b *batchConn) wake() {
	if b.parked.CompareAndSwap(true, false) {
		b.resume()
	}
}

// deadlineSlack bounds how much earlier than asked a flush's deadline may be.
const deadlineSlack = time.Second

// batchBufs recycles batch buffers: an idle client holds none.
var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledBatch keeps one huge burst from pinning a huge buffer in the pool.
const maxPooledBatch = 256 << 10

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.upgraded {
		b.upgraded = true
		b.deflate = bytes.Contains(p, []byte("permessage-deflate"))
	}
	if b.batching {
		*b.buf = append(*b.buf, p...)
		return len(p), nil
	}
	return b.Conn.Write(p)
}

// SetWriteDeadline is a no-op inside a batch: gorilla sets a deadline before
// every frame it writes, which would arm a runtime timer per frame and per
// member; flush sets one deadline for the whole batch instead.
func (b *batchConn) SetWriteDeadline(t time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.batching {
		return nil
	}
	b.deadline = t
	return b.Conn.SetWriteDeadline(t)
}

// SetDeadline is tracked like SetWriteDeadline.
func (b *batchConn) SetDeadline(t time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deadline = t
	return b.Conn.SetDeadline(t)
}

// begin starts collecting writes.
func (b *batchConn) begin() {
	b.mu.Lock()
	b.batching = true
	if b.buf == nil {
		b.buf = batchBufs.Get().(*[]byte)
	}
	b.mu.Unlock()
}

// appendFrames starts a batch holding the encoded frames of batch.
func (b *batchConn) appendFrames(batch []queued) {
	b.begin()
	b.mu.Lock()
	for _, q := range batch {
		*b.buf = append(*b.buf, q.f.wire...)
	}
	b.mu.Unlock()
}

// flush writes what was collected in one write, bounded by deadline, and
// ends the batch.
func (b *batchConn) flush(deadline time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batching = false
	if b.buf == nil {
		return nil
	}
	var err error
	if len(*b.buf) > 0 {
		// Keep the deadline already set if it is at most a quarter of the
		// remaining time (and at most deadlineSlack) earlier than asked.
		slack := min(deadlineSlack, time.Until(deadline)/4)
		if d := deadline.Sub(b.deadline); d < 0 || d > slack {
			err = b.Conn.SetWriteDeadline(deadline)
			b.deadline = deadline
		}
		if err == nil {
			_, err = b.Conn.Write(*b.buf)
		}
	}
	if cap(*b.buf) <= maxPooledBatch {
		*b.buf = (*b.buf)[:0]
		batchBufs.Put(b.buf)
	}
	b.buf = nil
	return err
}

// hijacker hands gorilla's Upgrade a batchConn in place of the raw connection.
// idleReader (fast_paths.idle_reader) lets the connection's reader wait
// outside gorilla (readable); without it the batchConn keeps no raw
// socket and the reader parks in ReadMessage.
type hijacker struct {
	http.ResponseWriter
	idleReader bool
	conn       *batchConn
}

// It also hands gorilla a read buffer of readBufferSize that batchConn keeps
// (see readable) in place of the HTTP server's 4 KB one; the Upgrader's
// ReadBufferSize must be 0 for gorilla to take it. A client that already
// sent more than its handshake keeps the original, and gorilla refuses it.
func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.conn = &batchConn{Conn: c}
	if rw.Reader.Buffered() > 0 {
		return h.conn, rw, nil
	}
	switch sc := c.(type) {
	case *net.TCPConn, *net.UnixConn: // plain sockets: no read-ahead of their own to miss
		if h.idleReader {
			h.conn.raw, _ = sc.(syscall.Conn).SyscallConn()
		}
	} // anything else (TLS): raw stays nil and readable returns at once
	h.conn.br = bufio.NewReaderSize(h.conn, readBufferSize)
	return h.conn, bufio.NewReadWriter(h.conn.br, rw.Writer), nil
}
