package server

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"
)

// batchConn wraps the connection gorilla hijacks so that a client's writer can
// coalesce every frame queued since it last woke into one write. Gorilla writes
// each frame with its own conn.Write — one syscall per frame and per member —
// which caps fan-out near 160k deliveries/s per core on our machines; one write
// per wake-up lifts that several-fold (see BENCHMARKS.md).
//
// Outside a batch, writes go straight through, so control frames that gorilla
// writes from the reader goroutine (the 1009 close, close replies) are never
// held back. The mutex keeps such a write from interleaving with a flush.
type batchConn struct {
	net.Conn
	mu       sync.Mutex
	batching bool
	buf      *[]byte
}

// batchBufs recycles batch buffers: an idle client holds none.
var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledBatch keeps one huge burst from pinning a huge buffer in the pool.
const maxPooledBatch = 256 << 10

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.batching {
		*b.buf = append(*b.buf, p...)
		return len(p), nil
	}
	return b.Conn.Write(p)
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
		if err = b.Conn.SetWriteDeadline(deadline); err == nil {
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

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.conn = &batchConn{Conn: c}
	return h.conn, rw, nil
}
