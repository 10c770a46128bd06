package server

import (
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chatserver/chatserver/internal/testutil"
	"github.com/chatserver/chatserver/pkg/config"
)

// Coalescing follows the load (client.pace): a writer that keeps up writes
// each frame at once; one whose last two writes carried several frames waits for
// the flush clock's next tick and writes all that queued by then in one
// write; once a write carries a single frame it writes at once again. The
// flush clock here has a period of an hour and the test ticks it by hand, so
// nothing depends on timing: a writer that waited for the clock when it
// should not would hold its frame, and the read would fail at its deadline.
// With write_delay 0 (no clock) a writer never waits.
func TestWriterCoalescesOnlyWhenBehind(t *testing.T) {
	for _, withClock := range []bool{true, false} {
		t.Run(fmt.Sprint("flush clock ", withClock), func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			// The batched writer's write count (with it off, gorilla
			// writes each frame itself: no coalescing to see).
			s := newTestServer(t, func(c *config.Config) { c.FastPaths.FrameWriter = true })
			var fc *flushClock
			if withClock {
				fc = &flushClock{period: time.Hour}
			}
			s.flush = fc
			peer, conn := tcpPair(t)
			cc := &countingConn{Conn: conn}
			c := newClient(s, 1, "r")
			c.bc = &batchConn{Conn: cc, upgraded: true}
			c.mu.Lock()
			c.canWrite = true
			c.mu.Unlock()
			n := 0
			frame := func() queued {
				n++
				return queued{f: newOutFrame(fmt.Appendf(nil, "%d", n))}
			}
			// waited: the writer waits for the clock (then the test ticks
			// it), or, without one, wrote at once.
			waited := func() {
				t.Helper()
				if fc == nil {
					return
				}
				testutil.Eventually(t, 5*time.Second, "the writer waiting for the flush clock", fc.armed)
				fc.tick()
			}

			// queueAtOnce queues frames while the writer waits for work:
			// its next write takes them all.
			queueAtOnce := func(k int) {
				c.mu.Lock()
				for range k {
					c.queue = append(c.queue, frame())
					c.others++
				}
				c.kickLocked()
				c.mu.Unlock()
			}

			// Three frames queued while the writer was not running (as on a
			// busy core, or two senders' messages arriving together): one
			// write. One such write does not make it wait: the next frame
			// goes out at once.
			queueAtOnce(3)
			expectFrames(t, peer, "1", "2", "3")
			expectWrites(t, cc, 1)
			mustEnqueue(t, c, frame())
			expectFrames(t, peer, "4")
			expectWrites(t, cc, 2)

			// Two writes of several frames in a row: it is behind.
			queueAtOnce(2)
			expectFrames(t, peer, "5", "6")
			queueAtOnce(2)
			expectFrames(t, peer, "7", "8")
			expectWrites(t, cc, 4)

			// The next frame waits for the tick, and one queued meanwhile
			// joins it in the same write.
			mustEnqueue(t, c, frame())
			if fc != nil {
				testutil.Eventually(t, 5*time.Second, "the writer waiting for the flush clock", fc.armed)
				mustEnqueue(t, c, frame())
				fc.tick()
				expectFrames(t, peer, "9", "10")
				expectWrites(t, cc, 5)
			} else {
				expectFrames(t, peer, "9")
				mustEnqueue(t, c, frame())
				expectFrames(t, peer, "10")
				expectWrites(t, cc, 6)
			}

			// Still behind (without a clock it never waits): one more
			// waits, alone, and is written alone.
			mustEnqueue(t, c, frame())
			waited()
			expectFrames(t, peer, "11")

			// That write carried one frame: the next goes out at once.
			mustEnqueue(t, c, frame())
			expectFrames(t, peer, "12")
			mustEnqueue(t, c, frame())
			expectFrames(t, peer, "13")
			if fc != nil && fc.armed() {
				t.Error("a writer that keeps up waits for the flush clock")
			}

			// The idle writer goes (after its linger).
			testutil.Eventually(t, 5*time.Second, "the writer to return", func() bool {
				c.mu.Lock()
				defer c.mu.Unlock()
				return !c.writing
			})
			goleak.VerifyNone(t, ignore)
		})
	}
}

func mustEnqueue(t *testing.T, c *client, q queued) {
	t.Helper()
	if err := c.enqueue(q); err != nil {
		t.Fatal(err)
	}
}

// expectFrames reads unmasked text frames of under 126 bytes from conn and
// checks their payloads.
func expectFrames(t *testing.T, conn net.Conn, want ...string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, w := range want {
		var hdr [2]byte
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			t.Fatalf("reading frame %q: %v", w, err)
		}
		if hdr[0] != 0x81 || hdr[1] >= 126 {
			t.Fatalf("frame header %#x, want a short text frame", hdr)
		}
		p := make([]byte, hdr[1])
		if _, err := io.ReadFull(conn, p); err != nil {
			t.Fatalf("reading frame %q: %v", w, err)
		}
		if string(p) != w {
			t.Fatalf("got frame %q, want %q", p, w)
		}
	}
}

func expectWrites(t *testing.T, cc *countingConn, want int64) {
	t.Helper()
	if got := cc.writes.Load(); got != want {
		t.Fatalf("%d writes so far, want %d", got, want)
	}
}

// countingConn counts the writes made to a connection.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// tcpPair is a connected loopback TCP pair, closed when the test ends.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}
