package server

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
	"unsafe"
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
	// (see Hijack and waitReadable); either may be nil.
	br  *bufio.Reader
	raw syscall.RawConn
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
type hijacker struct {
	http.ResponseWriter
	conn *batchConn
}

// It also hands gorilla a read buffer of readBufferSize that batchConn keeps
// (see waitReadable) in place of the HTTP server's 4 KB one; the Upgrader's
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
	if sc, ok := c.(syscall.Conn); ok {
		h.conn.raw, _ = sc.SyscallConn() // nil for TLS: waitReadable then returns at once
	}
	h.conn.br = bufio.NewReaderSize(h.conn, readBufferSize)
	return h.conn, bufio.NewReadWriter(h.conn.br, rw.Writer), nil
}

// waitReadable returns when the client has sent something other than a pong:
// a frame for ReadMessage, an error, or the end of the connection. Pongs that
// arrive while gorilla has nothing buffered are read and handled here
// (onPong), and the wait goes on; an expired read deadline or a closed
// connection is returned as the error.
//
// It exists for the reader's stack. A connection is idle most of its life,
// and a goroutine parked deep in ReadMessage (gorilla, bufio, net, poll)
// needs a 4 KB stack, while one parked here fits in the minimum 2 KB; a
// stack, once grown, is not shrunk back while its goroutine parks this deep.
// gorilla handles pongs only inside ReadMessage, so an idle member would
// otherwise enter it at the first pong (after ping_interval) and stay there.
//
// Frames are only peeked at until one is known to be a complete pong, so a
// frame that is not one is left whole for gorilla. Without a raw socket
// (TLS) it returns at once.
func (b *batchConn) waitReadable(onPong func()) error {
	if b.raw == nil || b.br == nil {
		return nil
	}
	for b.br.Buffered() == 0 { // gorilla is between frames, with nothing read ahead
		pong := false
		var rerr error
		err := b.raw.Read(func(fd uintptr) bool {
			pong, rerr = takePong(int(fd))
			return !errors.Is(rerr, syscall.EAGAIN)
		})
		switch {
		case err != nil:
			return err // deadline, or closed
		case rerr != nil || !pong:
			return nil // ReadMessage reads the frame, or reports the error
		}
		onPong()
	}
	return nil
}

// takePong reads a pong frame from socket fd if one is there whole, and
// reports whether it did; anything else stays unread. EAGAIN: nothing to read.
func takePong(fd int) (bool, error) {
	var hdr [2]byte
	n, err := recv(fd, hdr[:], syscall.MSG_PEEK)
	if err != nil || n < len(hdr) {
		return false, err
	}
	size, ok := pongSize(hdr)
	if !ok {
		return false, nil
	}
	frame := make([]byte, size) // once per ping_interval: off the stack, which must stay small
	if n, err = recv(fd, frame, syscall.MSG_PEEK); err != nil || n < size {
		return false, nil // not all there yet: ReadMessage waits for it
	}
	if n, err = recv(fd, frame, 0); err != nil || n != size {
		return false, errPongRead
	}
	return true, nil
}

var errPongRead = errors.New("websocket: a peeked pong frame could not be read")

// recv is recv(2) with MSG_DONTWAIT added to flags. It calls the system
// directly because syscall.Recvfrom's frame (it converts a source address)
// would, on its own, grow the reader's stack past its minimum.
func recv(fd int, p []byte, flags int) (int, error) {
	n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, uintptr(fd),
		uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)),
		uintptr(flags|syscall.MSG_DONTWAIT), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// pongSize reports whether a frame header (its first two bytes) starts a
// client's pong (RFC 6455 §5.2: FIN, opcode 0xA, masked, payload of at most
// 125 bytes), and the whole frame's size: header, mask key and payload.
func pongSize(hdr [2]byte) (int, bool) {
	const finPong, masked, lenMask = 0x80 | 0xA, 0x80, 0x7F
	if hdr[0] != finPong || hdr[1]&masked == 0 || int(hdr[1]&lenMask) > 125 {
		return 0, false
	}
	return 2 + 4 + int(hdr[1]&lenMask), true
}
